"""Event spans are positions in each direction's byte stream: the messages (and the
bytes skipped, lost or encrypted) tile the stream from its first byte to the last
one decoded, whatever the pieces it was fed in; payload data and gaps inside a
payload lie within their message; the read/write data ranges reported for
redaction are the events' data ranges."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbdscope import vocab as it
from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from tests import nbdwire as w
from tests.decoding import NAMES, decode, items_of, recut, script_items
from tests.wirescripts import go_handshake

POINTS = (ev.TransmissionStart, ev.TlsStart, ev.Malformed)  # where the decoder stood; they span nothing


def covered(events: list[ev.Event], direction: str) -> int:
    """Check the tiling of one direction; returns the offset it reaches."""
    at = 0
    last: ev.Event | None = None  # the last event that covered bytes
    for e in events:
        if e.dir != direction or isinstance(e, ev.ConnectionEnd):
            continue
        assert e.start <= e.end, e
        if isinstance(e, POINTS):
            assert e.start == e.end == at, e
        elif isinstance(e, ev.PayloadData) or (isinstance(e, ev.Gap) and not e.resync and e.start != at):
            # inside the message that carries it
            assert last is not None and last.start <= e.start and e.end <= last.end == at, (last, e)
            if isinstance(e, ev.PayloadData):
                assert (e.start, e.end) == (last.data_start, last.end)  # type: ignore[attr-defined]
                assert len(e.data) == e.end - e.start
        else:
            assert e.start == at, (last, e)
            at, last = e.end, e
    return at


def check_decoding(items: list[it.StreamItem] | tuple[it.StreamItem, ...], *, complete: bool) -> None:
    events, conns, fed = decode(items, keep_data=True, track_payload=True)
    for key, conn in conns.items():
        for side in (conn._c, conn._s):
            reached = covered(events[key], side.dir)
            assert side.fed == fed.get((key, side.dir), 0)
            # what the events cover, plus what is still undecoded, is what was fed
            if side.state.name == "HUNT":
                assert reached == side.hunt_from
            else:
                assert reached == side.fed - side.avail() + side.skip
            if complete:
                assert reached == side.fed and not side.avail() and not side.skip


def _data_ranges(events: list[ev.Event], direction: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for e in events:
        lo = getattr(e, "data_start", None)
        if e.dir == direction and lo is not None and e.end > lo:
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], e.end)
            else:
                out.append((lo, e.end))
    return out


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        elif hi > lo:
            out.append((lo, hi))
    return out


# ------------------------------------------------------------------ generated streams

READ, WRITE, FLUSH, TRIM, BSTATUS = 0, 1, 3, 4, 7


@st.composite
def conversations(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """A well-formed connection: a handshake, then requests each followed in time by its reply."""
    structured = draw(st.booleans())
    script = go_handshake(structured=structured)
    for cookie in range(draw(st.integers(1, 25))):
        cmd = draw(st.sampled_from([READ, WRITE, FLUSH, TRIM] + ([BSTATUS] if structured else [])))
        length = draw(st.integers(1, 3000)) if cmd in (READ, WRITE) else 512
        error = draw(st.sampled_from([0, 0, 0, 5]))
        data = bytes([cookie % 256]) * length
        script.append(("c2s", w.request(cmd, cookie, 4096 * cookie, length, data=data if cmd == WRITE else b"")))
        if not structured:
            script.append(("s2c", w.simple_reply(cookie, error, data if cmd == READ and not error else b"")))
        elif error:
            script.append(("s2c", w.chunk(cookie, 0x8001, w.error_payload(error, "no"), 1)))
        elif cmd == READ:
            half = length // 2
            if half:
                script.append(("s2c", w.chunk(cookie, 1, (4096 * cookie).to_bytes(8, "big") + data[:half])))
            script.append(("s2c", w.chunk(cookie, 1, (4096 * cookie + half).to_bytes(8, "big") + data[half:], 1)))
        elif cmd == BSTATUS:
            script.append(("s2c", w.chunk(cookie, 5, w.extents(7, [(256, 0), (256, 3)]), 1)))
        else:
            script.append(("s2c", w.chunk(cookie, 0, b"", 1)))
    script.append(("c2s", w.request(2, 999, 0, 0)))  # DISC
    return script


def _cut(script: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    """Join each direction's bytes and hand them over in pieces of random size, keeping
    each reply after its request (the decoder waits for the request otherwise, which is
    fine but would leave nothing to check)."""
    out: list[tuple[str, bytes]] = []
    for direction, data in script:
        at = 0
        while at < len(data):
            n = rng.choice([1, 3, 7, 28, 100, 4096, len(data)])
            out.append((direction, data[at:at + n]))
            at += n
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(0, 2**32 - 1))
def test_generated_streams_are_tiled_to_the_last_byte(script: list[tuple[str, bytes]], seed: int) -> None:
    items = script_items(_cut(script, random.Random(seed)))
    check_decoding(items, complete=True)
    events, _, _ = decode(items, track_payload=True)
    assert not [e for e in events[1] if isinstance(e, ev.Malformed | ev.Resync)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(0, 2**32 - 1))
def test_payload_ranges_are_the_events_data_ranges(script: list[tuple[str, bytes]], seed: int) -> None:
    conn = Connection(track_payload=True)
    events: list[ev.Event] = []
    taken: dict[str, list[tuple[int, int]]] = {"c2s": [], "s2c": []}
    for frame, (d, data) in enumerate(_cut(script, random.Random(seed))):
        events += conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]
        taken[d] += conn.take_payload_ranges(d)  # type: ignore[arg-type]
    for d in ("c2s", "s2c"):
        assert _merged(taken[d]) == _data_ranges(events, d)
    written = sum(e.payload_length for e in events if isinstance(e, ev.Request) and e.command == WRITE)
    assert sum(hi - lo for lo, hi in taken["c2s"]) == written
    read = sum(e.data_length or 0 for e in events
               if isinstance(e, ev.SimpleReply) or (isinstance(e, ev.ReplyChunk) and e.reply_type == 1))
    assert sum(hi - lo for lo, hi in taken["s2c"]) == read


def _damage(items: list[it.StreamItem], rng: random.Random) -> list[it.StreamItem]:
    """Lose some pieces to capture gaps and put garbage between others."""
    out: list[it.StreamItem] = []
    for item in items:
        roll = rng.random()
        if isinstance(item, it.StreamData) and roll < 0.06:
            out.append(it.StreamGap(item.conn, item.dir, len(item.data), item.frame, item.time))
        elif isinstance(item, it.StreamData) and roll < 0.12:
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            out += [it.StreamData(item.conn, item.dir, junk, item.frame, item.time), item]
        else:
            out.append(item)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.integers(0, 2**32 - 1), st.booleans())
def test_damaged_streams_are_tiled_too(script: list[tuple[str, bytes]], seed: int, saw_start: bool) -> None:
    rng = random.Random(seed)
    items = _damage(script_items(_cut(script, rng)), rng)
    if not saw_start:  # the capture began after the greeting and a few more bytes
        first = next(i for i, x in enumerate(items) if isinstance(x, it.StreamData) and x.dir == "s2c")
        items = [dataclasses.replace(items[0], saw_start=False)] + items[first + 1:]  # type: ignore[type-var]
    check_decoding(items, complete=False)


# ------------------------------------------------------------------ shipped captures


@pytest.mark.parametrize("name", NAMES)
def test_capture_spans_tile_each_direction(name: str) -> None:
    check_decoding(items_of(name), complete=False)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_capture_spans_do_not_depend_on_the_cuts(name: str, seed: int) -> None:
    items = items_of(name)
    pieces = recut(items, random.Random(seed))
    check_decoding(pieces, complete=False)
    whole, _, _ = decode(items)
    cut, _, _ = decode(pieces)
    spans = {k: [(e.seq, e.dir, e.start, e.end) for e in es if not isinstance(e, ev.TlsData)] for k, es in whole.items()}
    if not any(isinstance(e, ev.TlsData) for es in whole.values() for e in es):
        assert spans == {k: [(e.seq, e.dir, e.start, e.end) for e in es] for k, es in cut.items()}
