"""Capture files and packets to stream items: PacketStream (one packet at a time, shared by
live capture) and read_captures, whose per-packet loop for classic pcap files is written flat.

Nearly every frame of an NBD capture is the next in-order data segment of a connection
already known to be NBD, framed as Ethernet or Linux cooked + IPv4 without options +
TCP. For those the loop reads the record header with one struct call, the frame's
headers with another (linklayer.FAST_LAYOUTS), finds the connection's half by the raw
address and port bytes (TcpStreams.fast) and hands the payload view on: no Frame, no
Segment, no tuple key, no function call. Every other frame goes through
linklayer.tcp_segment and TcpStreams.feed, which decide the same for the common frames,
only slower (tests/unit/test_capture_fastpath.py holds the two to that). pcapng files
take the general path throughout. One generator and one TCP state serve every file: each generator
layer between the loop and the engine costs about 0.2 microseconds per item.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING

from nbdscope.capture.linklayer import ETYPE_AT, FAST_LAYOUTS, tcp_segment
from nbdscope.capture.pcapio.read import Window, open_capture, pcap_format, pcapng_frames, record_header
from nbdscope.capture.rotation import first_time
from nbdscope.capture.tcp import Origin, TcpStreams
from nbdscope.vocab import CaptureProblem, InputStart, StreamData, StreamItem, TimeOrigin

if TYPE_CHECKING:
    from nbdscope.fastpath import Accelerator

Progress = Callable[[str, int, int], None]  # path, frame number, bytes of the file read so far
PROGRESS_EVERY = 4096  # frames between progress callbacks

_new = tuple.__new__  # builds a StreamData without the Python-level __new__ of a NamedTuple (half the cost)


class PacketStream:
    """Incremental packets-to-streams conversion, shared by files and live capture."""

    def __init__(self, source: str, extra_ports: Collection[int] = (), first_conn_id: int = 0,
                 trace: list[Origin] | None = None) -> None:
        self.tcp = TcpStreams(source, extra_ports, first_conn_id, trace)
        self.last_frame = 0
        self.last_time = 0.0

    def feed_packet(self, time: float, linktype: int, buf: bytes, frame: int) -> list[StreamItem]:
        self.last_frame, self.last_time = frame, time
        seg = tcp_segment(linktype, buf)
        return self.tcp.feed(seg, frame, time) if seg is not None else []

    def finish(self) -> list[StreamItem]:
        return self.tcp.finish(self.last_frame, self.last_time)

    @property
    def next_conn_id(self) -> int:
        return self.tcp.next_id


def read_captures(paths: Sequence[str], extra_ports: Collection[int] = (),  # noqa: C901
                  progress: Progress | None = None, reuse_buffers: bool = False,
                  trace: list[Origin] | None = None, native: Accelerator | None = None) -> Iterator[StreamItem]:
    """Stream items of every NBD connection in the given files, read in the order given as one capture.

    The files are the pieces of one capture (a rotating tcpdump set, see capture/rotation.py, which puts
    them in order): one TCP state runs through them all, so a connection goes on across a file boundary
    and only the end of the last file ends the connections still open. Frame numbers start again with
    each file; with more than one file an InputStart item opens each file, so the consumer knows which
    file a frame number belongs to. Raises CaptureError (before yielding anything for that file) when a
    file is not a capture at all; damage part-way yields a CaptureProblem and the rest of what was read.
    With ``reuse_buffers`` the data of a StreamData item is only valid until the next item is requested
    (faster; the engine copes). ``trace``, if given, receives where every delivered byte lies in its file
    (see capture/tcp.py). ``native`` (nbdscope/fastpath.py, with ``reuse_buffers``) takes the records of
    the connections it adopted in compiled code, between the records this loop takes."""
    # (C901: the whole per-packet path in one generator frame on purpose, see the module's docstring)
    stream = PacketStream(paths[0] if paths else "", extra_ports, 0, trace)
    announce = len(paths) > 1
    pending = True  # the first packet of the first file, whatever it carries, is the run's time origin
    for path in paths:
        problems: list[str] = []
        stream.tcp.source = path  # connections opening from here on are in this file
        if announce:
            yield InputStart(path, first_time(path))
        f, kind = open_capture(path)
        tell = getattr(f, "raw", f).tell
        number, time = 0, 0.0
        try:
            if kind != "pcap":
                feed_packet = stream.feed_packet  # which keeps the last frame and time itself
                for frame, when, linktype, data in pcapng_frames(path, f, problems):
                    if pending:
                        pending = False
                        yield TimeOrigin(path, when)
                    items = feed_packet(when, linktype, data, frame)
                    if items:
                        yield from items
                    if progress is not None and not frame % PROGRESS_EVERY:
                        progress(path, frame, tell())
            else:
                fmt = pcap_format(path, f)
                linktype, divisor = fmt.linktype, 1e9 if fmt.nano else 1e6
                record = record_header(fmt)
                rec = record.unpack_from
                window = Window(f, reuse_buffers, record)
                fast_get, feed = stream.tcp.fast.get, stream.tcp.feed
                layout = FAST_LAYOUTS.get(linktype)
                parse, ip, least = (layout.unpack_from, layout.ip, layout.ip + 40) if layout else (None, 0, 1 << 62)
                tcp_at = ip + 20
                report = PROGRESS_EVERY if progress is not None else -1
                buf, view, pos, end = window.buf, window.view, 0, 0
                scan = native.begin(fmt.little, fmt.nano, layout, stream.tcp, ETYPE_AT[linktype]) \
                    if native is not None and layout is not None else None
                consider = native.consider if native is not None else None
                while True:
                    if scan is not None and native.adopted and end - pos >= 16:  # type: ignore[union-attr]
                        native.settle()  # type: ignore[union-attr]
                        pos, taken, when, rest = scan(buf, pos, end, number)
                        if taken != number:
                            number, time = taken, when
                            if progress is not None and number >= report:
                                report = number - number % PROGRESS_EVERY + PROGRESS_EVERY
                                progress(path, number, tell())
                        if rest is not None:  # a message the compiled path leaves to Python, and what follows
                            yield _new(StreamData, (rest[0], rest[1], view[rest[2]:rest[3]], number, time))
                            continue
                    if end - pos >= 16:
                        sec, frac, caplen = rec(buf, pos)
                        start = pos + 16
                        stop = start + caplen
                        if stop <= end:
                            number += 1
                            pos = stop
                            time = sec + frac / divisor
                            if caplen >= least:
                                etype, vihl, total, fragproto, key, seq, dflags = parse(buf, start)  # type: ignore[misc]
                                # IPv4 without options, TCP, not a fragment, data offset >= 5, no SYN/FIN/RST,
                                # the next bytes of a half of an NBD connection with nothing waiting
                                # (and not cut by the snapshot length: that takes the general path)
                                if (etype == 0x0800 and vihl == 0x45 and fragproto & 0x3FFF00FF == 6
                                        and dflags >= 0x5000 and not dflags & 7 and ip + total <= caplen
                                        and (half := fast_get(key)) is not None and half.next_seq == seq
                                        and not half.heap):
                                    pstart = start + tcp_at + ((dflags >> 10) & 0x3C)
                                    pend = start + ip + total if total and ip + total < caplen else stop
                                    if pstart < pend:
                                        n = pend - pstart
                                        half.next_seq = (seq + n) & 0xFFFFFFFF
                                        half.offset += n
                                        if trace is not None:
                                            trace.append(Origin(half.conn_id, half.dir,
                                                                half.offset - n - half.unseen, n, number,
                                                                pstart - start))
                                        yield _new(StreamData, (half.conn_id, half.dir, view[pstart:pend], number,
                                                                time))
                                        if consider is not None:
                                            consider(half)
                                        if number == report:
                                            report += PROGRESS_EVERY
                                            progress(path, number, tell())  # type: ignore[misc]
                                        continue
                            seg = tcp_segment(linktype, view[start:stop])
                            if seg is not None:
                                if scan is not None and native.adopted:  # type: ignore[union-attr]
                                    native.touch(seg.src, seg.sport, seg.dst, seg.dport)  # type: ignore[union-attr]
                                items = feed(seg, number, time)
                                if items:
                                    yield from items
                            if number == report:
                                report += PROGRESS_EVERY
                                progress(path, number, tell())  # type: ignore[misc]
                            continue
                    window.start, window.end = pos, end
                    problem = window.refill(number)
                    if problem is not None:
                        if problem:
                            problems.append(problem)
                        break
                    buf, view, pos, end = window.buf, window.view, window.start, window.end
                    if pending and end - pos >= 16:  # (here, once per read, not in the per-packet path)
                        pending = False
                        sec, frac, caplen = rec(buf, pos)
                        yield TimeOrigin(path, sec + frac / divisor, fmt.utc_offset)
        except (OSError, EOFError, zlib.error) as exc:
            problems.append(f"read error: {exc}")
        finally:
            if native is not None:
                native.release_all()  # the Python objects hold everything again before anyone reads them
            f.close()
            if number:
                stream.last_frame, stream.last_time = number, time
        for message in problems:
            yield CaptureProblem(path, stream.last_frame, message)
    yield from stream.finish()
