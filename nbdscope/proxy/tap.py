"""What passes the relay, as compact records on a pipe to the watcher process.

Decoding, rules and outputs cost tens of microseconds a message, more than the
relaying itself; in the relay's process they would sit between one message and the
next. So the relay only appends what it forwarded to this pipe (one non-blocking
gathered write per event-loop turn) and the watcher, on another core, does the
rest. Nothing is dropped: when the watcher falls behind, the backlog grows up to
HIGH_WATER and then the relay stops reading from its sockets until it drains.

A record is RECORD (kind, direction, connection, time, length) and ``length``
bytes: the data for DATA, UTF-8 text for NOTE (a packet comment for the next
DATA of that direction), JSON for OPEN (endpoints) and END (the relay's totals);
CLOSE carries the direction that closed first."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from nbdscope.capture.items import Direction

RECORD = struct.Struct("<BBIdI")
OPEN, DATA, NOTE, CLOSE, END = range(5)
DIRECTIONS: tuple[Direction, Direction] = ("c2s", "s2c")
DIR_CODE = {"c2s": 0, "s2c": 1}
HIGH_WATER, LOW_WATER = 32 << 20, 8 << 20  # bytes waiting for the watcher
PIPE_SIZE = 1 << 20
IOV_MAX = 1024
F_SETPIPE_SZ = 1031  # Linux fcntl


def widen(fd: int) -> None:
    """A bigger pipe means fewer wake-ups on both sides; the default is 64 KiB."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


class Tap:
    """The relay's writer. ``throttle(True)`` asks the relay to stop reading its
    sockets, ``throttle(False)`` to go on."""

    def __init__(self, fd: int, throttle: Callable[[bool], None]) -> None:
        self.fd = fd
        self.throttle = throttle
        self.queue: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.throttled = False
        self.scheduled = False
        self.writer_added = False
        self.broken = False
        os.set_blocking(fd, False)
        widen(fd)

    def _put(self, kind: int, direction: str, conn: int, time: float, payload: bytes | memoryview) -> None:
        if self.broken:
            return
        self.queue.append(RECORD.pack(kind, DIR_CODE[direction], conn, time, len(payload)))
        if payload:
            self.queue.append(payload)
        self.queued += RECORD.size + len(payload)
        if not self.scheduled and not self.writer_added:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        if self.queued > HIGH_WATER and not self.throttled:
            self.throttled = True
            self.throttle(True)

    def open(self, conn: int, time: float, info: dict[str, Any]) -> None:
        self._put(OPEN, "c2s", conn, time, json.dumps(info).encode())

    def data(self, conn: int, direction: Direction, time: float, data: bytes, note: str | None = None) -> None:
        if note:
            self._put(NOTE, direction, conn, time, note.encode())
        self._put(DATA, direction, conn, time, data)

    def close(self, conn: int, by: Direction, time: float) -> None:
        self._put(CLOSE, by, conn, time, b"")

    def end(self, totals: dict[str, Any], time: float) -> None:
        self._put(END, "c2s", 0, time, json.dumps(totals).encode())

    def flush(self) -> None:
        self.scheduled = False
        queue = self.queue
        while queue:
            batch = [queue[i] for i in range(min(len(queue), IOV_MAX))]
            try:
                sent = os.writev(self.fd, batch)
            except BlockingIOError:
                break
            except OSError:  # the watcher is gone: keep relaying, stop recording
                self.broken = True
                queue.clear()
                self.queued = 0
                break
            self.queued -= sent
            while sent:
                head = queue[0]
                if len(head) <= sent:
                    sent -= len(head)
                    queue.popleft()
                else:
                    queue[0] = memoryview(head)[sent:]
                    sent = 0
        loop = asyncio.get_running_loop()
        if queue and not self.writer_added:
            loop.add_writer(self.fd, self.flush)
            self.writer_added = True
        elif not queue and self.writer_added:
            loop.remove_writer(self.fd)
            self.writer_added = False
        if self.throttled and self.queued < LOW_WATER:
            self.throttled = False
            self.throttle(False)

    async def drain(self, timeout: float) -> None:
        """Wait until everything queued is in the pipe (at shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.queue and not self.broken and loop.time() < deadline:
            self.flush()
            await asyncio.sleep(0.005)


def read_records(fd: int, on_idle: Callable[[], None], idle_every: float) -> Any:
    """The watcher's reader: yields (kind, direction, conn, time, payload) until the
    relay closes the pipe; calls ``on_idle`` at least every ``idle_every`` seconds."""
    import select
    import time as clock

    rest = b""  # the start of a record that the last read cut short
    size = RECORD.size
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
        view = memoryview(data)  # payloads are handed on as views: no copy of bulk data here
        pos, end = 0, len(data)
        while end - pos >= size:
            kind, code, conn, time, length = RECORD.unpack_from(data, pos)
            if end - pos - size < length:
                break
            start = pos + size
            pos = start + length
            yield kind, DIRECTIONS[code], conn, time, view[start:pos]
        rest = data[pos:]
