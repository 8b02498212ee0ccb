"""What passes the relay, handed to the watcher process.

Decoding, rules and outputs cost tens of microseconds a message, more than the
relaying itself; in the relay's process they would sit between one message and the
next. So the relay only records what it forwarded and the watcher, on another
core, does the rest.

The relay receives straight into a ring of shared memory and sends from there, so
it never copies relayed bytes itself (receiving into fresh 256 KiB bytes objects
and copying those into the ring made it cost more CPU than nbdkit's nbd plugin on
bulk copies). A small record per chunk goes down a pipe, in order: RECORD (kind,
direction, connection, time, length, ring position), followed for OPEN, NOTE, END
and LOG by ``length`` bytes of JSON or text (ACTION: JSON naming something
the proxy did on purpose). The watcher publishes how far it has
consumed the ring. Nothing is dropped: when the ring is full the relay stops
reading from its sockets until the watcher has emptied an eighth of it, and the
watcher wakes it through a second pipe. Resuming at once instead, for every few
free bytes, doubled the relay's CPU time per message when the watcher was the
bottleneck: CPU the watcher then lacked."""

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

from nbdscope.capture.pipes import grow_pipe
from nbdscope.vocab import Direction

RECORD = struct.Struct("<BBIdIQ")
OPEN, DATA, NOTE, CLOSE, END, LOG, ACTION, SESSION_LOG = range(8)  # SESSION_LOG: a log line about one connection
DIRECTIONS: tuple[Direction, Direction] = ("c2s", "s2c")
DIR_CODE = {"c2s": 0, "s2c": 1}
RING_SIZE = 64 << 20
MAX_READ = 1 << 20  # largest single receive into the ring
PIPE_SIZE = 1 << 20
# A read of less than PACE_BELOW bytes of records (a trickle: one message per wake-up at QD1) is followed by a
# pause of PACE seconds so that records gather: halves the watcher's CPU at QD1 (27 to 12 us a message),
# bulk transfers never pause, and 1 ms is nothing to the 64 MiB ring or the console.
PACE, PACE_BELOW = 0.001, 4096
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
    ``throttle(False)`` to go on.

    Two ways in: ``reserve``/``commit`` let the relay receive straight into the ring and
    send from there (no copy of its own), ``data`` copies bytes that the relay changed or
    holds back. Ring space that a socket's send buffer may still point to is pinned
    until that buffer is empty, so neither way overwrites bytes not yet sent."""

    def __init__(self, fd: int, ring: Ring, throttle: Callable[[bool], None]) -> None:
        self.fd, self.ring = fd, ring
        self.throttle = throttle
        self.written = 0  # ring position of the next byte
        self.waiting: deque[tuple[int, str, int, float, bytes]] = deque()  # data waiting for ring space
        self.out = bytearray()  # records not yet in the pipe
        self.pins: dict[object, int] = {}  # who -> oldest ring position its unsent bytes start at
        self.throttled = False
        self.scheduled = False
        self.writer_added = False
        self.waker_added = False
        self.broken = False
        self.low_water = min(MAX_READ, ring.resume_at)  # less free ring than this throttles the relay
        os.set_blocking(fd, False)
        grow_pipe(fd, PIPE_SIZE)  # fewer wake-ups on both sides

    # ------------------------------------------------------------- the relay's calls

    def open(self, conn: int, time: float, info: dict[str, Any]) -> None:
        self._put(OPEN, "c2s", conn, time, json.dumps(info).encode())

    def data(self, conn: int, direction: Direction, time: float, data: bytes, note: str | None = None) -> None:
        if note:
            self._put(NOTE, direction, conn, time, note.encode())
        if self.broken:
            return
        self.waiting.append((DATA, direction, conn, time, data))
        self._place()
        self._schedule()

    def reserve(self) -> tuple[int, memoryview] | None:
        """Ring space to receive into directly: (position, view), or None when there is
        none to spare or copied data is queued ahead."""
        if self.waiting:
            return None
        size, at = self.ring.size, self.written % self.ring.size
        n = min(size - at, self._free(), MAX_READ)
        return (self.written, self.ring.data[at:at + n]) if n > 0 else None

    def commit(self, conn: int, direction: Direction, time: float, at: int, n: int) -> None:
        """Record ``n`` bytes received into the space ``reserve`` gave at ``at``."""
        assert at == self.written and not self.waiting
        if not self.broken:
            self.out += RECORD.pack(DATA, DIR_CODE[direction], conn, time, n, at)
        self.written += n
        self._schedule()
        if not self.throttled and self._free() < self.low_water:
            self._hold(True)

    def note(self, conn: int, direction: Direction, time: float, text: str) -> None:
        """Something to say about a direction of a session that no relayed bytes carry (a capture comment)."""
        self._put(NOTE, direction, conn, time, text.encode())

    def pin(self, who: object, at: int) -> None:
        """``who`` (a socket) still has bytes from ring position ``at`` on to send."""
        self.pins.setdefault(who, at)

    def unpin(self, who: object) -> None:
        if self.pins.pop(who, None) is not None and self.throttled:
            self.flush()

    def action(self, conn: int, direction: Direction, time: float, action: str, text: str,
               values: dict[str, int] | None = None) -> None:
        """Something the proxy did to a session on purpose (rewrote flags, delayed, closed it), recorded
        before the bytes it concerns."""
        self._put(ACTION, direction, conn, time, json.dumps({"action": action, "text": text,
                                                             "values": values or {}}).encode())

    def close(self, conn: int, by: Direction, time: float, reset: bool = False) -> None:
        """``by`` closed first; ``reset``: with a reset rather than a FIN."""
        self._put(CLOSE, by, conn, time, b"rst" if reset else b"")

    def log(self, line: str, time: float, conn: int | None = None) -> None:
        """A line of the relay's own log, shown where the watcher shows its own (console or UI); with
        ``conn``, about that connection, which the watcher names by the session id the engine gives it."""
        self._put(LOG if conn is None else SESSION_LOG, "c2s", conn or 0, time, line.encode())

    def end(self, totals: dict[str, Any], time: float) -> None:
        self._put(END, "c2s", 0, time, json.dumps(totals).encode())

    # ------------------------------------------------------------- inside

    def _put(self, kind: int, direction: str, conn: int, time: float, payload: bytes) -> None:
        if self.broken:
            return
        if self.waiting:  # behind queued data, to keep the order
            self.waiting.append((kind, direction, conn, time, payload))
        else:
            self._record(kind, direction, conn, time, payload)
        self._schedule()

    def _record(self, kind: int, direction: str, conn: int, time: float, payload: bytes) -> None:
        """A record that carries its payload in the pipe (all kinds but DATA)."""
        self.out += RECORD.pack(kind, DIR_CODE[direction], conn, time, len(payload), 0)
        self.out += payload

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _free(self) -> int:
        """Ring bytes that may be written: neither unread by the watcher nor pinned."""
        low = self.written if self.broken else self.ring.consumed.value
        if self.pins:
            low = min(low, *self.pins.values())
        return self.ring.size - (self.written - low)

    def _place(self) -> None:
        """Move queued items into the ring and their records into ``out``, as far as there is room."""
        ring, size, out, pack = self.ring, self.ring.size, self.out, RECORD.pack
        waiting = self.waiting
        if self.throttled and self._free() < ring.resume_at:
            return
        while waiting:
            kind, direction, conn, time, payload = waiting[0]
            if kind != DATA:
                self._record(kind, direction, conn, time, payload)
                waiting.popleft()
                continue
            at = self.written % size
            n = min(len(payload), self._free(), size - at)  # a piece never wraps around the end
            if n <= 0:
                break
            ring.data[at:at + n] = memoryview(payload)[:n] if n < len(payload) else payload
            out += pack(DATA, DIR_CODE[direction], conn, time, n, self.written)
            self.written += n
            if n < len(payload):
                waiting[0] = (kind, direction, conn, time, memoryview(payload)[n:])  # type: ignore[assignment]
            else:
                waiting.popleft()
        if waiting and not self.throttled:
            self._hold(True)

    def _hold(self, on: bool) -> None:
        self.throttled = on
        if on:  # the watcher wakes us when there is room; should that cross our going to sleep, we look anyway
            self.ring.written.value = self.written
            self.ring.waiting.value = 1
            loop = asyncio.get_running_loop()
            if not self.waker_added:
                loop.add_reader(self.ring.wake_r, self._woken)
                self.waker_added = True
            if not self.scheduled:
                self.scheduled = True
                loop.call_later(RETRY, self.flush)
        self.throttle(on)

    def flush(self) -> None:
        self.scheduled = False
        if not self.broken:
            self._place()
        held = self.throttled and (bool(self.waiting) or self._free() < self.ring.resume_at)
        if held:  # said before the records go out: the watcher's wake-up after reading them must not be lost
            self.ring.waiting.value = 1
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
                held = self.throttled and self._free() < self.ring.resume_at
        loop = asyncio.get_running_loop()
        if self.out and not self.writer_added:
            loop.add_writer(self.fd, self.flush)
            self.writer_added = True
        elif not self.out and self.writer_added:
            loop.remove_writer(self.fd)
            self.writer_added = False
        if self.throttled and not held:
            self._hold(False)
        elif held and not self.scheduled:
            self.scheduled = True
            loop.call_later(RETRY, self.flush)

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
        if len(chunk) < PACE_BELOW:
            clock.sleep(PACE)
