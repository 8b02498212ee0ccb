"""Live capture: tcpdump writes classic pcap to a pipe and we read it as it comes.

tcpdump does the privileged part (the interface, the kernel ring); we decode what
it hands over with the same pcap record reader as for files, incrementally. Its
drop counters are asked for every few seconds (SIGUSR1) and at the end, and
passed on, because a capture that lost packets must say so.
"""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import IO, BinaryIO

from nbdscope.capture import PacketStream
from nbdscope.capture.pcapio.read import CaptureError, Packet, PcapHeader, pcap_frames, pcap_records
from nbdscope.capture.pcapio.write import PcapngWriter
from nbdscope.capture.pipes import grow_pipe
from nbdscope.capture.processes import stop_process
from nbdscope.vocab import CaptureProblem, StreamItem, TimeOrigin

STATS_EVERY = 2.0  # seconds between drop-counter queries
START_TIMEOUT = 10.0
PIPE_BYTES = 16 << 20
CHUNK = 1 << 20  # bytes per read from the pipe
QUEUE_CHUNKS = 512  # chunks the pipe thread may hold ahead of the decoder (a few hundred MB at most)
_DROPS = re.compile(r"(\d+) packets? dropped by kernel")
_IFACE_DROPS = re.compile(r"(\d+) packets? dropped by interface")


class LiveError(Exception):
    """The capture tool could not start; the message is its own one-line reason."""


class _Pipe:
    """The capture pipe, drained by its own thread into a bounded queue of chunks.

    Reading in a thread that does nothing else empties the pipe within moments of
    tcpdump writing, whatever the decoder is busy with, so tcpdump never blocks on
    a full pipe (which is what makes the kernel drop packets); the queue absorbs
    bursts (up to QUEUE_CHUNKS of up to CHUNK bytes). read(n) returns n bytes
    unless the pipe ended."""

    def __init__(self, f: IO[bytes]) -> None:
        self.queue: queue.Queue[bytes] = queue.Queue(QUEUE_CHUNKS)
        self.buf = bytearray()
        self.ended = False
        threading.Thread(target=self._drain, args=(f,), name="nbdscope-capture-pipe", daemon=True).start()

    def _drain(self, f: IO[bytes]) -> None:
        read = f.read
        while True:
            chunk = read(CHUNK)
            self.queue.put(chunk or b"")
            if not chunk:
                return

    def _more(self) -> bool:
        if self.ended:
            return False
        chunk = self.queue.get()
        if not chunk:
            self.ended = True
            return False
        self.buf += chunk
        while not self.queue.empty() and len(self.buf) < CHUNK * 4:  # take what is already there, in one go
            chunk = self.queue.get_nowait()
            if not chunk:
                self.ended = True
                break
            self.buf += chunk
        return True

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and self._more():
            pass
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readinto(self, view: memoryview) -> int:
        if not self.buf and not self._more():
            return 0
        n = min(len(view), len(self.buf))
        view[:n] = self.buf[:n]
        del self.buf[:n]
        return n


class LiveCapture:
    """tcpdump on one interface; ``items()`` yields stream items until ``stop()``."""

    def __init__(self, interface: str, *, bpf: str = "tcp", extra_ports: Collection[int] = (),
                 buffer_kib: int = 65536, on_notice: Callable[[str], None] | None = None,
                 tool: str = "tcpdump", save: BinaryIO | None = None) -> None:
        self.interface, self.bpf, self.ports = interface, bpf, list(extra_ports)
        self.buffer_kib = buffer_kib
        self.on_notice = on_notice or (lambda text: None)
        self.tool = tool
        self.save = save  # where to copy every captured packet, as pcapng (live -w)
        self.proc: subprocess.Popen[bytes] | None = None
        self.dropped = 0  # kernel drops reported so far
        self.stopped = threading.Event()
        self._listening = threading.Event()
        self._err_lines: list[str] = []

    def start(self) -> None:
        """Start tcpdump and wait (bounded) until it listens; LiveError with its reason otherwise."""
        if shutil.which(self.tool) is None:
            raise LiveError(f"{self.tool} not found (Debian package tcpdump)")
        cmd = [self.tool, "-i", self.interface, "-B", str(self.buffer_kib), "-s", "0", "-n", "-U", "--immediate-mode",
               "-w", "-",
               *self.bpf.split()]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        if self.proc.stdout is not None:  # tcpdump must not block on it whenever we are descheduled
            grow_pipe(self.proc.stdout.fileno(), PIPE_BYTES)
        threading.Thread(target=self._read_stderr, name="nbdscope-tcpdump-stderr", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not self._listening.is_set():
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the stderr reader collect the reason
                lines = [line for line in self._err_lines if line.strip()]
                reason = next((line for line in reversed(lines) if line.startswith(self.tool + ":")),
                              lines[-1] if lines else "exited")
                raise LiveError(f"{self.tool} -i {self.interface}: {reason.removeprefix(self.tool + ': ')}")
            self._listening.wait(0.05)
        if not self._listening.is_set():
            self.stop()
            raise LiveError(f"{self.tool} -i {self.interface}: did not start within {START_TIMEOUT:.0f} s")
        threading.Thread(target=self._ask_stats, name="nbdscope-tcpdump-stats", daemon=True).start()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._err_lines.append(line)
            del self._err_lines[:-50]
            if "listening on" in line:
                self._listening.set()
            for pattern in (_DROPS, _IFACE_DROPS):
                m = pattern.search(line)
                if m and int(m.group(1)) > 0:
                    self._note_drops(int(m.group(1)), line)

    def _note_drops(self, count: int, line: str) -> None:
        if count > self.dropped:
            self.dropped = count
            self.on_notice(f"capture: {self.tool} reports {count} packets dropped by the kernel; "
                           "messages in them are missing (see capture-gap findings)")

    def _ask_stats(self) -> None:
        while not self.stopped.wait(STATS_EVERY):
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGUSR1)

    def items(self) -> Iterator[StreamItem]:
        """Stream items of every NBD connection seen, until the capture stops."""
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdout is not None
        stream = PacketStream("live", self.ports)
        problems: list[str] = []
        pipe = _Pipe(self.proc.stdout)
        try:
            if self.save is not None:
                yield from self._saving(stream, pipe, problems, self.save)
            else:
                for number, ts, linktype, data in pcap_frames("live", pipe, problems, False):
                    if number == 1:  # relative times count from the first packet captured, as in the saved file
                        yield TimeOrigin("live", ts)
                    items = stream.feed_packet(ts, linktype, data, number)
                    if items:
                        yield from items
        except CaptureError as exc:
            if not self.stopped.is_set():
                problems.append(str(exc))
        for message in problems:
            if not self.stopped.is_set():
                yield CaptureProblem("live", stream.last_frame, message)
        yield from stream.finish()
        self.stop()

    def _saving(self, stream: PacketStream, pipe: _Pipe, problems: list[str],
                save: BinaryIO) -> Iterator[StreamItem]:
        """Decode as ``items`` does, copying each packet to ``save`` first (its own timestamp units and
        wire length), flushed per packet so that the file is whole up to the last packet at any moment."""
        writer = PcapngWriter(save)
        writer.section([f"nbdscope live -i {self.interface} ({self.bpf})"])
        for rec in pcap_records("live", pipe, problems):
            if isinstance(rec, PcapHeader):
                writer.interface(rec.linktype, rec.snaplen, rec.tsresol)
            elif isinstance(rec, Packet):
                writer.packet(0, rec.ticks, rec.data, rec.wirelen)
                writer.flush()
                if rec.number == 1:
                    yield TimeOrigin("live", rec.time)
                items = stream.feed_packet(rec.time, rec.linktype, rec.data, rec.number)  # type: ignore[arg-type]  # a view
                if items:
                    yield from items

    def request_stop(self) -> None:
        """Ask tcpdump to end without waiting (safe in a signal handler); ``items()`` then drains the pipe."""
        self.stopped.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """SIGINT, so tcpdump flushes and prints its final counters; bounded wait, then kill."""
        self.stopped.set()
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)
