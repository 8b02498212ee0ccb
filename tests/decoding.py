"""Shared pieces of the decoder tests: shipped captures as stream items, a decoder run over
them, hand-built conversations as items, and streams cut anywhere."""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import cache

from nbdscope import vocab as it
from nbdscope.capture import read_captures
from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from tests.oracles import CAPTURES

NAMES = sorted(p.name for p in CAPTURES.glob("*.pcap*"))


@cache
def items_of(name: str) -> tuple[it.StreamItem, ...]:
    return tuple(read_captures([str(CAPTURES / name)]))


def decode(items: Iterable[it.StreamItem], **kw: bool) -> tuple[dict[int, list[ev.Event]], dict[int, Connection],
                                                                dict[tuple[int, str], int]]:
    """Events per connection, the connections, and the bytes fed (or lost) per direction."""
    conns: dict[int, Connection] = {}
    events: dict[int, list[ev.Event]] = {}
    fed: dict[tuple[int, str], int] = {}
    for item in items:
        if isinstance(item, it.StreamOpen):
            conns[item.conn] = Connection(saw_start=item.saw_start, **kw)
            events[item.conn] = []
            continue
        conn = conns.get(getattr(item, "conn", -1))
        if conn is None:
            continue
        out = events[item.conn]
        if isinstance(item, it.StreamData):
            fed[item.conn, item.dir] = fed.get((item.conn, item.dir), 0) + len(item.data)
            out += conn.feed(item.dir, item.data, frame=item.frame, time=item.time)
        elif isinstance(item, it.StreamGap):
            fed[item.conn, item.dir] = fed.get((item.conn, item.dir), 0) + item.nbytes
            out += conn.gap(item.dir, item.nbytes, frame=item.frame, time=item.time)
        elif isinstance(item, it.StreamClose):
            out += conn.close(item.how, frame=item.frame, time=item.time, by=item.by)
    return events, conns, fed


def script_items(script: list[tuple[str, bytes]]) -> list[it.StreamItem]:
    """A hand-built conversation as stream items of one connection."""
    c, s = it.Endpoint("10.0.0.1", 40000), it.Endpoint("10.0.0.2", 10809)
    out: list[it.StreamItem] = [it.StreamOpen(1, c, s, 0, 0.0, True, "test")]
    for frame, (direction, data) in enumerate(script, 1):
        out.append(it.StreamData(1, direction, data, frame, frame / 1000))  # type: ignore[arg-type]
    out.append(it.StreamClose(1, "fin", len(script) + 1, 1.0, "c2s"))
    return out


def recut(items: tuple[it.StreamItem, ...], rng: random.Random) -> list[it.StreamItem]:
    out: list[it.StreamItem] = []
    for item in items:
        if not isinstance(item, it.StreamData) or len(item.data) < 2:
            out.append(item)
            continue
        cuts = sorted(rng.sample(range(1, len(item.data)), min(len(item.data) - 1, rng.randrange(1, 6))))
        for lo, hi in zip([0, *cuts], [*cuts, len(item.data)], strict=True):
            out.append(it.StreamData(item.conn, item.dir, item.data[lo:hi], item.frame, item.time))
    return out
