"""What passes the relay, handed to the watcher process.

Decoding, rules and outputs cost tens of microseconds a message, more than the
relaying itself; in the relay's process they would sit between one message and the
next. So the relay only records what it forwarded and the watcher, on another
core, does the rest.

Relayed bytes go into a ring of shared memory (one memcpy; a pipe would cost two
copies and page allocations, which halved bulk throughput), and a small record per
chunk goes down a pipe, in order: RECORD (kind, direction, connection, time,
length, ring position), followed for OPEN, NOTE, END and LOG by ``length`` bytes of
JSON or text. The watcher publishes how far it has consumed the ring. Nothing is
dropped: when the ring is full the relay stops reading from its sockets until the
watcher has emptied an eighth of it, and the watcher wakes it through a second pipe.
Resuming at once instead, for every few free bytes, doubled the relay's CPU time
per message when the watcher was the bottleneck: CPU the watcher then lacked."""

from __future__ import annotations

import asyncio
import ctypes
import json
import mmap
import os
import struct
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from nbdscope.capture.items import Direction
from nbdscope.capture.pipes import grow_pipe

RECORD = struct.Struct("<BBIdIQ")
OPEN, DATA, NOTE, CLOSE, END, LOG = range(6)
DIRECTIONS: tuple[Direction, Direction] = ("c2s", "s2c")
DIR_CODE = {"c2s": 0, "s2c": 1}
RING_SIZE = 64 << 20
PIPE_SIZE = 1 << 20
RETRY = 0.01  # seconds between looks at a full ring, should a wake-up be missed

Record = tuple[int, Direction, int, float, memoryview]


class Ring:
    """Shared memory made before the fork: the data area, the watcher's read position, the
    relay's write position and whether the relay waits for room; and the wake-up pipe."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.size = size
        self.resume_at = size // 8  # free bytes a throttled relay waits for
        self.map = mmap.mmap(-1, size + 24)  # anonymous and shared: both processes see it after fork
        self.data = memoryview(self.map)[:size]
        # aligned 8-byte stores are atomic
        self.consumed, self.written, self.waiting = (
            ctypes.c_uint64.from_buffer(self.map, size + at) for at in (0, 8, 16))
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)

    def wake_relay(self) -> None:
        """The watcher's part: wake a throttled relay once there is room enough."""
        if self.waiting.value and self.written.value - self.consumed.value <= self.size - self.resume_at:
            self.waiting.value = 0
            try:
                os.write(self.wake_w, b"!")
            except OSError:  # full (a wake-up is pending anyway) or the relay is gone
                pass


class Tap:
    """The relay's side. ``throttle(True)`` asks the relay to stop reading its sockets,
    ``throttle(False)`` to go on."""

    def __init__(self, fd: int, ring: Ring, throttle: Callable[[bool], None]) -> None:
        self.fd, self.ring = fd, ring
        self.throttle = throttle
        self.written = 0  # ring position of the next byte
        self.waiting: deque[tuple[int, str, int, float, bytes]] = deque()  # not yet in the ring or the pipe
        self.out = bytearray()  # records not yet in the pipe
        self.throttled = False
        self.scheduled = False
        self.writer_added = False
        self.waker_added = False
        self.broken = False
        os.set_blocking(fd, False)
        grow_pipe(fd, PIPE_SIZE)  # fewer wake-ups on both sides

    def _put(self, kind: int, direction: str, conn: int, time: float, payload: bytes) -> None:
        if self.broken:
            return
        self.waiting.append((kind, direction, conn, time, payload))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def open(self, conn: int, time: float, info: dict[str, Any]) -> None:
        self._put(OPEN, "c2s", conn, time, json.dumps(info).encode())

    def data(self, conn: int, direction: Direction, time: float, data: bytes, note: str | None = None) -> None:
        if note:
            self._put(NOTE, direction, conn, time, note.encode())
        self._put(DATA, direction, conn, time, data)

    def close(self, conn: int, by: Direction, time: float) -> None:
        self._put(CLOSE, by, conn, time, b"")

    def log(self, line: str, time: float) -> None:
        """A line of the relay's own log, shown where the watcher shows its own (console or UI)."""
        self._put(LOG, "c2s", 0, time, line.encode())

    def end(self, totals: dict[str, Any], time: float) -> None:
        self._put(END, "c2s", 0, time, json.dumps(totals).encode())

    def _place(self) -> bool:
        """Move waiting items into the ring and their records into ``out``; False when the ring is full."""
        ring, size, out, pack = self.ring, self.ring.size, self.out, RECORD.pack
        waiting = self.waiting
        if self.throttled and size - (self.written - ring.consumed.value) < ring.resume_at:
            return False
        while waiting:
            kind, direction, conn, time, payload = waiting[0]
            if kind != DATA:
                out += pack(kind, DIR_CODE[direction], conn, time, len(payload), 0)
                out += payload
                waiting.popleft()
                continue
            free = size - (self.written - ring.consumed.value)
            at = self.written % size
            n = min(len(payload), free, size - at)  # a piece never wraps around the end
            if n <= 0:
                return False
            ring.data[at:at + n] = memoryview(payload)[:n] if n < len(payload) else payload
            out += pack(DATA, DIR_CODE[direction], conn, time, n, self.written)
            self.written += n
            if n < len(payload):
                waiting[0] = (kind, direction, conn, time, memoryview(payload)[n:])  # type: ignore[assignment]
            else:
                waiting.popleft()
        return True

    def flush(self) -> None:
        self.scheduled = False
        if self.broken:
            return
        placed = self._place()
        self.ring.written.value = self.written
        if self.out:
            try:
                sent = os.write(self.fd, self.out)
                del self.out[:sent]
            except BlockingIOError:
                pass
            except OSError:  # the watcher is gone: keep relaying, stop recording
                self.broken = True
                self.waiting.clear()
                self.out.clear()
                placed = True
        loop = asyncio.get_running_loop()
        if self.out and not self.writer_added:
            loop.add_writer(self.fd, self.flush)
            self.writer_added = True
        elif not self.out and self.writer_added:
            loop.remove_writer(self.fd)
            self.writer_added = False
        if not placed:  # the ring is full: the watcher wakes us when there is room
            self.ring.waiting.value = 1
            if not self.waker_added:
                loop.add_reader(self.ring.wake_r, self._woken)
                self.waker_added = True
            if not self.scheduled:  # and should the wake-up cross our going to sleep, we look anyway
                self.scheduled = True
                loop.call_later(RETRY, self.flush)
        if placed != (not self.throttled):
            self.throttled = not placed
            self.throttle(self.throttled)

    def _woken(self) -> None:
        try:
            os.read(self.ring.wake_r, 4096)
        except OSError:
            pass
        self.flush()

    async def drain(self, timeout: float) -> None:
        """Wait until everything recorded is in the pipe (at shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.waiting or self.out) and not self.broken and loop.time() < deadline:
            self.flush()
            await asyncio.sleep(0.002)


def read_records(fd: int, ring: Ring, on_idle: Callable[[], None], idle_every: float) -> Iterator[Record]:
    """The watcher's side: yields (kind, direction, conn, time, payload) until the relay
    closes the pipe, and calls ``on_idle`` at least every ``idle_every`` seconds.

    A DATA payload is a view into the ring, valid until the next record is asked for
    (then the ring space is handed back to the relay)."""
    import select
    import time as clock

    size, ring_size = RECORD.size, ring.size
    rest = b""  # a record that the last read cut short
    last_idle = clock.monotonic()
    while True:
        ready, _, _ = select.select([fd], [], [], idle_every)
        if not ready or clock.monotonic() - last_idle >= idle_every:
            on_idle()
            last_idle = clock.monotonic()
            if not ready:
                continue
        chunk = os.read(fd, PIPE_SIZE)
        if not chunk:
            return
        data = rest + chunk if rest else chunk
        pos, end = 0, len(data)
        while end - pos >= size:
            kind, code, conn, time, length, at = RECORD.unpack_from(data, pos)
            if kind == DATA:
                pos += size
                start = at % ring_size
                yield kind, DIRECTIONS[code], conn, time, ring.data[start:start + length]
                ring.consumed.value = at + length
                continue
            if end - pos - size < length:
                break
            start = pos + size
            pos = start + length
            yield kind, DIRECTIONS[code], conn, time, memoryview(data)[start:pos]
        rest = data[pos:]
        ring.wake_relay()
