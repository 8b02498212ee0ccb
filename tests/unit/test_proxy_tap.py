"""The relay-to-watcher hand-off: order kept, nothing lost when the ring is full
(the relay is throttled instead), records of every kind intact."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time

import pytest

from nbdscope.proxy import tap


def _consume(fd: int, ring: tap.Ring, out: list[tuple[int, str, int, bytes]], slow: float) -> None:
    for kind, direction, conn, _time, payload in tap.read_records(fd, ring, lambda: None, 0.05):
        out.append((kind, direction, conn, bytes(payload)))
        if slow:
            time.sleep(slow)


def test_a_small_ring_throttles_the_relay_and_loses_nothing() -> None:
    _throttled_run(wake_only=False)


def test_the_watcher_wakes_a_throttled_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the relay's own second look a minute away, only the watcher's wake-up can finish in time."""
    monkeypatch.setattr(tap, "RETRY", 60.0)
    _throttled_run(wake_only=True)


def _throttled_run(wake_only: bool) -> None:
    ring = tap.Ring(size=8192)
    read_fd, write_fd = os.pipe()
    got: list[tuple[int, str, int, bytes]] = []
    reader = threading.Thread(target=_consume, args=(read_fd, ring, got, 0.0))
    reader.start()
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(120)]
    throttles: list[bool] = []

    async def relay() -> None:
        t = tap.Tap(write_fd, ring, throttles.append)
        t.open(1, 0.0, {"client": ["192.0.2.1", 1], "server": ["192.0.2.2", 2], "comment": None})
        for i, chunk in enumerate(chunks):
            t.data(1, "c2s" if i % 2 else "s2c", float(i), chunk, note="seven" if i == 7 else None)
            if i % 10 == 0:
                await asyncio.sleep(0)
        t.close(1, "s2c", 1.0)
        t.end({"sessions": 1}, 2.0)
        if wake_only:  # wait without flushing ourselves, as a relay with idle sockets would
            deadline = time.monotonic() + 15
            while (t.waiting or t.out) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not t.waiting and not t.out, "the throttled relay was never woken"
        await t.drain(timeout=30)

    asyncio.run(relay())
    os.close(write_fd)
    reader.join(30)
    os.close(read_fd)
    assert True in throttles and throttles[-1] is False  # the full ring held the relay back, then let go
    kinds = [k for k, *_ in got]
    assert kinds[0] == tap.OPEN and kinds[-2:] == [tap.CLOSE, tap.END]
    assert json.loads(got[-1][3]) == {"sessions": 1}
    assert [p for k, _, _, p in got if k == tap.NOTE] == [b"seven"]
    for direction, parity in (("c2s", 1), ("s2c", 0)):  # pieces may be split at the ring's end, never reordered
        sent = b"".join(c for i, c in enumerate(chunks) if i % 2 == parity)
        assert b"".join(p for k, d, _, p in got if k == tap.DATA and d == direction) == sent


def test_a_vanished_watcher_leaves_the_relay_running() -> None:
    ring = tap.Ring(size=1 << 16)
    read_fd, write_fd = os.pipe()
    os.close(read_fd)

    async def relay() -> bool:
        t = tap.Tap(write_fd, ring, lambda on: None)
        t.data(1, "c2s", 0.0, b"x" * 100)
        await asyncio.sleep(0.01)
        t.data(1, "c2s", 0.0, b"y" * 100)
        await asyncio.sleep(0.01)
        return t.broken

    assert asyncio.run(relay())
    os.close(write_fd)
