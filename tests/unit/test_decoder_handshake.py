"""Decoder unit tests on hand-built handshakes (spec sections "Handshake",
"Option types", "Option reply types")."""

from __future__ import annotations

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from tests import nbdwire as w
from tests.wirescripts import go_handshake, of, run


def test_fixed_newstyle_go_negotiation() -> None:
    events = run(go_handshake())
    greet = of(events, ev.ServerGreeting)[0]
    assert greet.style == "fixed-newstyle" and greet.handshake_flags == 3
    assert of(events, ev.ClientFlags)[0].flags == 3
    opts = of(events, ev.OptionRequest)
    assert [o.option for o in opts] == [8, 10, 7]
    assert opts[1].export_name == "disk" and opts[1].queries == ("base:allocation",)
    assert opts[2].info_requests == (3,) and opts[2].problem is None
    start = of(events, ev.TransmissionStart)[0]
    assert start.how == "go" and start.export_name == "disk"
    assert start.size == 1 << 20 and start.transmission_flags == 0x14D
    assert (start.min_block, start.preferred_block, start.max_payload) == (512, 4096, 1 << 25)
    assert start.structured_replies is True and start.extended_headers is False
    assert start.meta_contexts == ((7, "base:allocation"),)
    assert all(r.solicited and r.problem is None for r in of(events, ev.OptionReply))


def test_export_name_with_and_without_zeroes() -> None:
    for hflags, cflags, zeroes in ((3, 3, False), (1, 1, True), (3, 1, True)):
        script = [("s2c", w.greeting_newstyle(hflags)), ("c2s", w.client_flags(cflags)),
                  ("c2s", w.option(1, b"exp")),
                  ("s2c", (1234).to_bytes(8, "big") + (3).to_bytes(2, "big") + (bytes(124) if zeroes else b"")),
                  ("c2s", w.request(0, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512)))]
        events = run(script)
        reply = of(events, ev.ExportNameReply)[0]
        assert (reply.size, reply.transmission_flags, reply.zeroes) == (1234, 3, zeroes)
        start = of(events, ev.TransmissionStart)[0]
        assert start.how == "export-name" and start.export_name == "exp"
        simple = of(events, ev.SimpleReply)[0]
        assert simple.data_length == 512 and simple.command == 0
        assert of(events, ev.Malformed) == []


def test_oldstyle_greeting() -> None:
    script = [("s2c", w.greeting_oldstyle(4096, 0x0003)), ("c2s", w.request(1, 9, 0, 4, data=b"abcd")),
              ("s2c", w.simple_reply(9))]
    events = run(script)
    greet = of(events, ev.ServerGreeting)[0]
    assert greet.style == "oldstyle" and greet.size == 4096 and greet.transmission_flags == 3
    req = of(events, ev.Request)[0]
    assert (req.command, req.cookie, req.payload_length) == (1, 9, 4)
    assert of(events, ev.SimpleReply)[0].data_length == 0


def test_plain_newstyle_is_not_fixed() -> None:
    events = run([("s2c", w.greeting_newstyle(0)), ("c2s", w.client_flags(0))])
    assert of(events, ev.ServerGreeting)[0].style == "newstyle"


def test_list_and_errors_and_info() -> None:
    server = (5).to_bytes(4, "big") + b"alpha" + b"first export"
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
              ("c2s", w.option(3)), ("s2c", w.opt_reply(3, 2, server)), ("s2c", w.opt_reply(3, 1)),
              ("c2s", w.option(6, w.opt_go_data("nope"))),
              ("s2c", w.opt_reply(6, (1 << 31) | 6, b"no such export")),
              ("c2s", w.option(99, b"xyz")), ("s2c", w.opt_reply(99, (1 << 31) | 1)),
              ("c2s", w.option(2)), ("s2c", w.opt_reply(2, 1))]
    events = run(script)
    replies = of(events, ev.OptionReply)
    assert replies[0].name == "alpha" and replies[0].description == "first export"
    assert replies[2].message == "no such export"
    assert replies[3].reply == (1 << 31) | 1
    assert not of(events, ev.TransmissionStart)


def test_starttls_marks_rest_encrypted() -> None:
    hello = b"\x16\x03\x01\x00\x50" + bytes(80)
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
              ("c2s", w.option(5)), ("s2c", w.opt_reply(5, 1)),
              ("c2s", hello), ("s2c", b"\x16\x03\x03" + bytes(200)),
              ("c2s", w.request(0, 1, 0, 512))]
    events = run(script)
    assert len(of(events, ev.TlsStart)) == 1
    tls = of(events, ev.TlsData)
    assert sum(t.nbytes for t in tls if t.dir == "c2s") == len(hello) + 28
    assert sum(t.nbytes for t in tls if t.dir == "s2c") == 203
    assert not of(events, ev.Request) and not of(events, ev.Malformed)


def test_option_payload_inconsistencies_are_reported() -> None:
    bad_go = (10).to_bytes(4, "big") + b"ab"  # name length 10, only 2 bytes follow
    bad_info = (0).to_bytes(2, "big") + bytes(4)  # NBD_INFO_EXPORT with 4 bytes instead of 10
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
              ("c2s", w.option(7, bad_go)), ("s2c", w.opt_reply(7, 3, bad_info)),
              ("c2s", w.option(8, b"junk")), ("s2c", w.opt_reply(9, 1))]
    events = run(script)
    opts = of(events, ev.OptionRequest)
    assert "runs past" in opts[0].problem
    assert "must carry none" in opts[1].problem
    replies = of(events, ev.OptionReply)
    assert "needs 12 bytes" in replies[0].problem
    assert replies[1].solicited is False


def test_hostile_option_length_does_not_allocate() -> None:
    conn = Connection()
    conn.feed("s2c", w.greeting_newstyle(), frame=1, time=0)
    conn.feed("c2s", w.client_flags() + w.IHAVEOPT + (7).to_bytes(4, "big") + (0xFFFFFFFF).to_bytes(4, "big"),
              frame=2, time=0)
    for i in range(50):
        conn.feed("c2s", bytes(65536), frame=3 + i, time=0)
    # only what arrived is held, and never more than the decode limit
    assert len(conn._c.buf) <= 65536 * 50 + 64
    events = conn.close("fin", frame=99, time=1)
    assert isinstance(events[-1], ev.ConnectionEnd)


def test_reply_before_option_payload_completes() -> None:
    # nbdkit --tls=require answers from the option header, before the payload is all there
    go = w.option(6, w.opt_go_data("", (3, 1, 2)))
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", go[:22]),
              ("s2c", w.opt_reply(6, (1 << 31) | 5)), ("c2s", go[22:]), ("c2s", w.option(2)),
              ("s2c", w.opt_reply(2, 1))]
    events = run(script)
    assert [r.solicited for r in of(events, ev.OptionReply)] == [True, True]
    assert of(events, ev.OptionRequest)[0].info_requests == (3, 1, 2)
