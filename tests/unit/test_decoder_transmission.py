"""Decoder unit tests for the transmission phase (spec "Transmission",
"Structured reply chunk message", "Extended reply chunk message")."""

from __future__ import annotations

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from tests import nbdwire as w
from tests.wirescripts import go_handshake, of, run

READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZEROES, BSTATUS = range(8)
DONE = 1


def test_pipelined_out_of_order_simple_replies_with_read_data() -> None:
    script = go_handshake(structured=False) + [
        ("c2s", w.request(READ, 1, 0, 4096) + w.request(READ, 2, 4096, 512) + w.request(WRITE, 3, 0, 3, data=b"xyz")),
        ("s2c", w.simple_reply(2, 0, b"B" * 512) + w.simple_reply(3) + w.simple_reply(1, 0, b"A" * 4096)),
        ("c2s", w.request(DISC, 4, 0, 0)),
    ]
    events = run(script)
    reqs = of(events, ev.Request)
    assert [(r.command, r.cookie, r.offset, r.length, r.payload_length) for r in reqs] == [
        (READ, 1, 0, 4096, 0), (READ, 2, 4096, 512, 0), (WRITE, 3, 0, 3, 3), (DISC, 4, 0, 0, 0)]
    replies = of(events, ev.SimpleReply)
    assert [(r.cookie, r.command, r.data_length) for r in replies] == [(2, READ, 512), (3, WRITE, 0), (1, READ, 4096)]
    assert all(r.latency_us is not None and r.latency_us >= 0 for r in replies)
    end = events[-1]
    assert isinstance(end, ev.ConnectionEnd) and end.soft and end.in_flight == ()
    assert of(events, ev.Malformed) == []


def test_read_data_split_across_many_chunks() -> None:
    conn = Connection()
    for i, (d, data) in enumerate(go_handshake(structured=False)):
        conn.feed(d, data, frame=i, time=0)  # type: ignore[arg-type]
    conn.feed("c2s", w.request(READ, 7, 0, 100000), frame=50, time=0.1)
    blob = w.simple_reply(7, 0, bytes(100000)) + w.simple_reply(8, 5)
    out: list[ev.Event] = []
    for i in range(0, len(blob), 1000):
        out += conn.feed("s2c", blob[i:i + 1000], frame=60 + i, time=0.2)
    replies = of(out, ev.SimpleReply)
    assert [(r.cookie, r.data_length) for r in replies] == [(7, 100000), (8, 0)]
    assert replies[1].error == 5 and replies[1].command is None
    assert len(conn._s.buf) < 1000  # payload was skipped, not buffered


def test_structured_read_chunks_and_block_status() -> None:
    script = go_handshake() + [
        ("c2s", w.request(READ, 1, 0, 8192) + w.request(BSTATUS, 2, 0, 1024, flags=0)),
        ("s2c", w.chunk(2, 5, w.extents(7, [(1000, 0), (24, 3)]), DONE)),
        ("s2c", w.chunk(1, 1, (0).to_bytes(8, "big") + bytes(4096))),
        ("s2c", w.chunk(1, 2, (4096).to_bytes(8, "big") + (4096).to_bytes(4, "big"))),
        ("s2c", w.chunk(1, 0, b"", DONE)),
    ]
    events = run(script)
    chunks = of(events, ev.ReplyChunk)
    bs = chunks[0]
    assert bs.reply_type == 5 and bs.context_id == 7 and bs.context == "base:allocation"
    assert bs.extents == ((1000, 0), (24, 3)) and bs.completes and bs.command == BSTATUS
    data, hole, none = chunks[1:]
    assert (data.offset, data.data_length, data.completes) == (0, 4096, False)
    assert (hole.offset, hole.hole_length) == (4096, 4096)
    assert none.completes and none.latency_us is not None and none.command == READ
    assert all(c.problem is None for c in chunks)


def test_error_chunks() -> None:
    script = go_handshake() + [
        ("c2s", w.request(READ, 1, 0, 512) + w.request(WRITE, 2, 0, 1, data=b"x")),
        ("s2c", w.chunk(1, 0x8002, w.error_payload(5, "bad sector", 256))),
        ("s2c", w.chunk(1, 0x8001, w.error_payload(5, "gave up"), DONE)),
        ("s2c", w.chunk(2, 0x8001, w.error_payload(28, "full") + b"extra", DONE)),
    ]
    chunks = of(run(script), ev.ReplyChunk)
    assert (chunks[0].error, chunks[0].message, chunks[0].offset) == (5, "bad sector", 256)
    assert chunks[1].message == "gave up" and chunks[1].completes
    assert "disagrees" in chunks[2].problem


def test_extended_headers() -> None:
    hs = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
          ("c2s", w.option(11)), ("s2c", w.opt_reply(11, 1)),
          ("c2s", w.option(10, w.opt_meta_data("", ["base:allocation"]))),
          ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))), ("s2c", w.opt_reply(10, 1)),
          ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(1 << 33, 0x1001))),
          ("s2c", w.opt_reply(7, 1))]
    payload = (1 << 32).to_bytes(8, "big") + (1).to_bytes(4, "big")
    script = hs + [
        ("c2s", w.ext_request(WRITE, 1, 1 << 32, 4, flags=1 << 5, data=b"abcd")),
        ("c2s", w.ext_request(BSTATUS, 2, 0, len(payload), flags=1 << 5, data=payload)),
        ("c2s", w.ext_request(TRIM, 3, 0, 1 << 33)),
        ("s2c", w.ext_chunk(1, 0, 1 << 32, b"", DONE)),
        ("s2c", w.ext_chunk(2, 6, 0, w.extents_ext(1, [(1 << 32, 0)]), DONE)),
        ("s2c", w.ext_chunk(3, 0, 0, b"", DONE)),
    ]
    events = run(script)
    start = of(events, ev.TransmissionStart)[0]
    assert start.extended_headers is True and start.size == 1 << 33
    reqs = of(events, ev.Request)
    assert [(r.extended, r.payload_length) for r in reqs] == [(True, 4), (True, 12), (True, 0)]
    assert reqs[1].effect_length == 1 << 32 and reqs[1].context_ids == (1,)
    assert reqs[2].length == 1 << 33
    chunks = of(events, ev.ReplyChunk)
    assert chunks[0].header_offset == 1 << 32 and chunks[0].extended
    assert chunks[1].extents == ((1 << 32, 0),) and chunks[1].descriptor_count == 1
    assert all(c.completes and c.command is not None for c in chunks)


def test_mid_stream_capture_finds_messages() -> None:
    tail = bytes(300)  # the end of a write payload that began before the capture
    script = [("c2s", tail + w.request(READ, 5, 0, 16)), ("s2c", b"\x00" * 40 + w.simple_reply(5, 0, bytes(16))),
              ("c2s", w.request(FLUSH, 6, 0, 0)), ("s2c", w.simple_reply(6))]
    events = run(script, saw_start=False)
    start = of(events, ev.TransmissionStart)[0]
    assert start.how == "mid-stream" and start.structured_replies is None
    assert [r.cookie for r in of(events, ev.Request)] == [5, 6]
    assert [(r.cookie, r.data_length) for r in of(events, ev.SimpleReply)] == [(5, 16), (6, 0)]
    resyncs = of(events, ev.Resync)
    assert sorted(r.skipped for r in resyncs) == [40, 300]


def test_mid_stream_unknown_simple_reply_with_data_resyncs() -> None:
    script = [("s2c", w.simple_reply(77, 0, b"\x11" * 100) + w.simple_reply(78, 5)),
              ("c2s", w.request(READ, 79, 0, 8)), ("s2c", w.simple_reply(79, 0, bytes(8)))]
    events = run(script, saw_start=False)
    replies = of(events, ev.SimpleReply)
    assert [(r.cookie, r.data_length) for r in replies] == [(77, None), (78, 0), (79, 8)]


def test_gap_inside_payload_keeps_framing() -> None:
    conn = Connection()
    for i, (d, data) in enumerate(go_handshake(structured=False)):
        conn.feed(d, data, frame=i, time=0)  # type: ignore[arg-type]
    conn.feed("c2s", w.request(READ, 1, 0, 10000), frame=40, time=0)
    out = conn.feed("s2c", w.simple_reply(1, 0, bytes(3000)), frame=41, time=0)
    out += conn.gap("s2c", 4000, frame=42, time=0)
    conn.feed("c2s", w.request(FLUSH, 2, 0, 0), frame=43, time=0)
    out += conn.feed("s2c", bytes(3000) + w.simple_reply(2, 0), frame=44, time=0)
    gap = of(out, ev.Gap)[0]
    assert gap.nbytes == 4000 and gap.resync is False
    assert [r.cookie for r in of(out, ev.SimpleReply)] == [1, 2]


def test_gap_across_headers_resyncs_on_next_valid_header() -> None:
    conn = Connection()
    for i, (d, data) in enumerate(go_handshake(structured=False)):
        conn.feed(d, data, frame=i, time=0)  # type: ignore[arg-type]
    conn.feed("c2s", w.request(WRITE, 1, 0, 100, data=bytes(50)), frame=40, time=0)
    out = conn.gap("c2s", 200, frame=41, time=0)  # lost the rest of the write and part of the next header
    # what follows: tail of a lost header, then a plausible-looking fake magic with a bogus command,
    # then a real request
    fake = w.request(200, 9, 0, 0)
    out += conn.feed("c2s", b"\x01\x02\x03" + fake + w.request(READ, 3, 512, 512), frame=42, time=0)
    assert of(out, ev.Gap)[0].resync is True
    reqs = of(out, ev.Request)
    assert [(r.cookie, r.command) for r in reqs] == [(3, READ)]
    assert of(out, ev.Resync)[0].skipped == 3 + len(fake)


def test_cookie_reuse_and_unmatched_reply_are_visible() -> None:
    script = go_handshake(structured=False) + [
        ("c2s", w.request(READ, 1, 0, 4) + w.request(FLUSH, 1, 0, 0)),
        ("s2c", w.simple_reply(1, 0) + w.simple_reply(1, 0)),
    ]
    events = run(script)
    replies = of(events, ev.SimpleReply)
    assert replies[0].command == FLUSH  # the newest request with that cookie
    assert replies[1].command == READ  # the reuse hid the earlier request; it is in flight again


def test_hard_disconnect_lists_in_flight() -> None:
    script = go_handshake(structured=False) + [("c2s", w.request(READ, 1, 0, 4) + w.request(TRIM, 2, 0, 4096))]
    end = run(script)[-1]
    assert isinstance(end, ev.ConnectionEnd) and not end.soft
    assert sorted((c, cmd) for c, cmd, _f in end.in_flight) == [(1, READ), (2, TRIM)]


def test_garbage_in_transmission_is_malformed_not_fatal() -> None:
    script = go_handshake(structured=False) + [
        ("c2s", b"GARBAGE!" * 4 + w.request(READ, 1, 0, 4)), ("s2c", w.simple_reply(1, 0, b"abcd"))]
    events = run(script)
    bad = of(events, ev.Malformed)
    assert len(bad) == 1 and bad[0].what == "bad-magic"
    assert [r.cookie for r in of(events, ev.SimpleReply)] == [1]


def test_payload_ranges_are_tracked_for_redaction() -> None:
    conn = Connection(track_payload=True)
    for i, (d, data) in enumerate(go_handshake(structured=False)):
        conn.feed(d, data, frame=i, time=0)  # type: ignore[arg-type]
    c_base = conn._c.fed
    blob = w.request(WRITE, 1, 0, 10, data=b"0123456789") + w.request(READ, 2, 0, 6)
    conn.feed("c2s", blob[:30], frame=50, time=0)
    conn.feed("c2s", blob[30:], frame=51, time=0)
    assert conn.take_payload_ranges("c2s") == [(c_base + 28, c_base + 30), (c_base + 30, c_base + 38)]
    s_base = conn._s.fed
    conn.feed("s2c", w.simple_reply(1) + w.simple_reply(2, 0, b"abcdef"), frame=52, time=0)
    assert conn.take_payload_ranges("s2c") == [(s_base + 32, s_base + 38)]
    assert conn.take_payload_ranges("s2c") == []
