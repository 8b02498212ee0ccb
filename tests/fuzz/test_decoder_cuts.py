"""Where a stream is cut must not change what it decodes to. TCP segments, the proxy's
receives and the decoder's own feeding in pieces (FEED_PIECE) all cut messages at
arbitrary places; the shipped captures, re-cut at random and fed in tiny pieces,
must give the same events and the same read/write data ranges as fed whole."""

from __future__ import annotations

import dataclasses
import random
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbdscope import vocab as it
from nbdscope.capture import read_captures
from nbdscope.decoder import Connection
from nbdscope.decoder import connection as decoder_module
from nbdscope.decoder import events as ev
from tests.decoding import recut
from tests.oracles import CAPTURES

Decoded = tuple[list[ev.Event], dict[tuple[int, str], list[tuple[int, int]]]]


@cache
def _items(name: str) -> tuple[it.StreamItem, ...]:
    return tuple(read_captures([str(CAPTURES / name)]))


def _decode(items: list[it.StreamItem] | tuple[it.StreamItem, ...]) -> Decoded:
    conns: dict[int, Connection] = {}
    events: list[tuple[int, ev.Event]] = []
    ranges: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for item in items:
        if isinstance(item, it.StreamOpen):
            conns[item.conn] = Connection(saw_start=item.saw_start, track_payload=True)
            continue
        conn = conns.get(getattr(item, "conn", -1))
        if conn is None:
            continue
        if isinstance(item, it.StreamData):
            events += ((item.conn, e) for e in conn.feed(item.dir, item.data, frame=item.frame, time=item.time))
            _merge(ranges.setdefault((item.conn, item.dir), []), conn.take_payload_ranges(item.dir))
        elif isinstance(item, it.StreamGap):
            events += ((item.conn, e) for e in conn.gap(item.dir, item.nbytes, frame=item.frame, time=item.time))
        elif isinstance(item, it.StreamClose):
            events += ((item.conn, e) for e in conn.close(item.how, frame=item.frame, time=item.time, by=item.by))
    return _tls_per_frame(events), ranges


def _tls_per_frame(events: list[tuple[int, ev.Event]]) -> list[ev.Event]:
    """Encrypted bytes are reported per piece fed: count them per frame and direction (one
    event for the pieces, spanning them all; the connection's later events renumbered to match)."""
    out: list[ev.Event] = []
    merged: dict[int, int] = {}  # connection -> events merged away so far
    last_conn = -1
    for conn, e in events:
        last = out[-1] if out else None
        if (isinstance(e, ev.TlsData) and isinstance(last, ev.TlsData) and conn == last_conn
                and (last.dir, last.frame) == (e.dir, e.frame)):
            assert e.start == last.end
            # the first bytes' judgement (plaintext, ServerHello version) rides on the piece that completed them
            out[-1] = dataclasses.replace(last, nbytes=last.nbytes + e.nbytes, end=e.end,
                                          plaintext=last.plaintext or e.plaintext,
                                          hello_version=last.hello_version if last.hello_version is not None
                                          else e.hello_version)
            merged[conn] = merged.get(conn, 0) + 1
        else:
            out.append(dataclasses.replace(e, seq=e.seq - merged[conn]) if merged.get(conn) else e)
        last_conn = conn
    return out


def _merge(into: list[tuple[int, int]], more: list[tuple[int, int]]) -> None:
    """Ranges as one list of maximal runs: cut streams report the same bytes in more pieces."""
    for lo, hi in more:
        if into and into[-1][1] == lo:
            into[-1] = (into[-1][0], hi)
        elif hi > lo:
            into.append((lo, hi))


NAMES = sorted(p.name for p in CAPTURES.glob("*.pcap*"))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_cutting_the_stream_anywhere_changes_nothing(name: str, seed: int) -> None:
    items = _items(name)
    assert _decode(recut(items, random.Random(seed))) == _decode(items)


@pytest.mark.parametrize("name", NAMES)
def test_feeding_in_tiny_pieces_changes_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    items = _items(name)
    whole = _decode(items)
    monkeypatch.setattr(decoder_module, "FEED_PIECE", 7)
    assert _decode(items) == whole
