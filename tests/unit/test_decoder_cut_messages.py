"""Messages cut by the snapshot length (issue 15, header-only captures) whose header was captured:
the handshake messages and buffered chunks whose length their header gives are decoded from the
bytes the capture kept, marked with ``lost``, passed over by that length, and decoding goes on;
the rules judge nothing that needs the lost bytes. A cut that takes a header is still a capture
gap that loses framing."""

from __future__ import annotations

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine, Result
from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd, Opt, Rep, ReplyType
from tests import nbdwire as w
from tests.judging import fired, violations
from tests.wirescripts import of

# (direction, message, bytes of it the capture kept: None for all of it)
Cut = list[tuple[str, bytes, int | None]]

OPTION_HEADER, OPTION_REPLY_HEADER = 16, 20


def decode(script: Cut) -> list[ev.Event]:
    """Each message in its own frame, the bytes past ``keep`` reported as cut by the snapshot length."""
    conn = Connection()
    out: list[ev.Event] = []
    for frame, (direction, data, keep) in enumerate(script, 1):
        kept = data if keep is None else data[:keep]
        out += conn.feed(direction, kept, frame=frame, time=frame / 1000)  # type: ignore[arg-type]
        if len(kept) < len(data):
            out += conn.gap(direction, len(data) - len(kept), frame=frame, time=frame / 1000,  # type: ignore[arg-type]
                            snapped=True)
    return out + conn.close("fin", frame=len(script) + 1, time=1.0)


def judge(script: Cut, port: int = 10809) -> Result:
    """The same through every rule, the capture ending with the connection open."""
    engine = Engine()
    engine.feed(it.StreamOpen(conn=0, client=it.Endpoint("127.0.0.1", 40000), server=it.Endpoint("127.0.0.1", port),
                              frame=0, time=0.0, saw_start=True, source="t.pcap"))
    for frame, (direction, data, keep) in enumerate(script, 1):
        kept = data if keep is None else data[:keep]
        engine.feed(it.StreamData(conn=0, dir=direction, data=kept, frame=frame, time=frame / 1000))  # type: ignore[arg-type]
        if len(kept) < len(data):
            engine.feed(it.StreamGap(conn=0, dir=direction, nbytes=len(data) - len(kept), frame=frame,  # type: ignore[arg-type]
                                     time=frame / 1000, snapped=True))
    return engine.finish()


def transmission() -> Cut:
    """A write and its reply after the handshake: decoded only if framing held on both sides."""
    return [("c2s", w.request(Cmd.WRITE, 5, 0, 512, data=bytes(512)), None), ("s2c", w.simple_reply(5), None)]


def go(meta_keep: int | None = None, info_keep: int | None = None, context_keep: int | None = None) -> Cut:
    """Fixed newstyle to NBD_OPT_GO with base:allocation, any of three messages cut."""
    return [("s2c", w.greeting_newstyle(), None), ("c2s", w.client_flags(), None),
            ("c2s", w.option(Opt.STRUCTURED_REPLY), None), ("s2c", w.opt_reply(Opt.STRUCTURED_REPLY, Rep.ACK), None),
            ("c2s", w.option(Opt.SET_META_CONTEXT, w.opt_meta_data("disk", ["base:allocation"])), meta_keep),
            ("s2c", w.opt_reply(Opt.SET_META_CONTEXT, Rep.META_CONTEXT, w.meta_context(7, "base:allocation")),
             context_keep),
            ("s2c", w.opt_reply(Opt.SET_META_CONTEXT, Rep.ACK), None),
            ("c2s", w.option(Opt.GO, w.opt_go_data("disk", ())), None),
            ("s2c", w.opt_reply(Opt.GO, Rep.INFO, w.info_export(1 << 20, 0x14D)), info_keep),
            ("s2c", w.opt_reply(Opt.GO, Rep.ACK), None)]


def _framed(events: list[ev.Event], how: str) -> None:
    """Framing held: no gap lost it, the handshake ended as it did on the wire, the write was paired."""
    assert not [g for g in of(events, ev.Gap) if g.resync] and not of(events, ev.Resync)
    assert [t.how for t in of(events, ev.TransmissionStart)] == [how]
    reply = of(events, ev.SimpleReply)
    assert [(r.cookie, r.command, r.data_length) for r in reply] == [(5, Cmd.WRITE, 0)]


def _blamed(result: Result) -> list[tuple[str | None, str]]:
    return [(a.check, a.message) for a in violations(result) if a.blame in ("client", "server")]


def test_cut_option_request_is_emitted_and_framing_holds() -> None:
    script = go(meta_keep=OPTION_HEADER + 10) + transmission()  # the cut falls in the export name's count
    events = decode(script)
    request = next(o for o in of(events, ev.OptionRequest) if o.option == Opt.SET_META_CONTEXT)
    total = len(script[4][1])
    assert request.lost == total - OPTION_HEADER - 10 and request.end - request.start == total
    assert request.queries == () and request.problem is None  # what the cut took is not the client's fault
    gap = next(g for g in of(events, ev.Gap))
    assert (gap.resync, gap.snapped, gap.within, gap.nbytes) == (False, True, "option", request.lost)
    _framed(events, "go")
    start = of(events, ev.TransmissionStart)[0]
    assert start.meta_contexts == ((7, "base:allocation"),) and start.export_name == "disk"

    result = judge(script)
    assert _blamed(result) == []  # contexts-for-no-queries would blame the server for a request it cannot see
    note = fired(result, "capture-gap.header-only", blame="capture")
    assert note[0].values["messages"] == 1 and "payload checks of 1 handshake message" in note[0].message


def test_cut_option_replies_are_emitted_and_judged_only_on_what_was_captured() -> None:
    # the context name cut to "base" (no colon), the NBD_INFO_EXPORT reply cut after its first type byte
    script = go(context_keep=OPTION_REPLY_HEADER + 4 + 4, info_keep=OPTION_REPLY_HEADER + 1) + transmission()
    events = decode(script)
    context = next(r for r in of(events, ev.OptionReply) if r.reply == Rep.META_CONTEXT)
    assert (context.context_id, context.name, context.lost) == (7, "base", len("base:allocation") - 4)
    info = next(r for r in of(events, ev.OptionReply) if r.reply == Rep.INFO)
    assert (info.info_type, info.size, info.problem, info.lost) == (None, None, None, 12 - 1)
    assert [g.within for g in of(events, ev.Gap)] == ["option-reply", "option-reply"]
    _framed(events, "go")

    result = judge(script)
    # bad-context-name ("base" has no colon) and go-without-export-info (no info type decoded) would
    # both judge bytes the capture lost
    assert _blamed(result) == []
    assert fired(result, "capture-gap.header-only")[0].values["messages"] == 2


def test_cut_oldstyle_greeting_starts_transmission() -> None:
    greeting = w.greeting_oldstyle(1 << 20, 0x1)  # HAS_FLAGS only
    script: Cut = [("s2c", greeting, 28 + 10), *transmission()]  # magics, size, flags and 10 of the 124 zeroes
    events = decode(script)
    (hello,) = of(events, ev.ServerGreeting)
    assert (hello.style, hello.size, hello.transmission_flags, hello.lost) == ("oldstyle", 1 << 20, 1, 114)
    assert hello.end - hello.start == len(greeting)
    assert of(events, ev.Gap)[0].within == "greeting"
    _framed(events, "oldstyle")
    assert _blamed(judge(script, port=10810)) == []  # (oldstyle on the newstyle port is a finding of its own)


def test_cut_export_name_padding_is_padding() -> None:
    reply = w.greeting_newstyle(0b01)  # fixed newstyle without NO_ZEROES: the 124 zeroes are due
    export = bytes.fromhex("0000000000100000") + (0x1).to_bytes(2, "big") + bytes(124)
    script: Cut = [("s2c", reply, None), ("c2s", w.client_flags(0b01), None),
                   ("c2s", w.option(Opt.EXPORT_NAME, b"disk"), None), ("s2c", export, 10 + 20), *transmission()]
    events = decode(script)
    (done,) = of(events, ev.ExportNameReply)
    assert (done.size, done.zeroes, done.lost) == (1 << 20, True, 104)
    _framed(events, "export-name")
    assert _blamed(judge(script)) == []


def test_cut_block_status_chunk_keeps_the_extents_captured() -> None:
    extents = [(4096, 0), (4096, 3), (4096, 0), (4096, 3)]
    chunk = w.chunk(9, ReplyType.BLOCK_STATUS, w.extents(7, extents), flags=1)
    script = go() + [("c2s", w.request(Cmd.BLOCK_STATUS, 9, 0, 16384), None), ("s2c", chunk, 20 + 4 + 8 * 2),
                     *transmission()]
    events = decode(script)
    (status,) = [c for c in of(events, ev.ReplyChunk) if c.reply_type == ReplyType.BLOCK_STATUS]
    assert status.extents == tuple(extents[:2]) and status.extents_truncated and status.lost == 8 * 2
    assert status.context == "base:allocation" and status.completes and status.problem is None
    assert of(events, ev.Gap)[-1].within == "reply-chunk"
    assert [(r.cookie, r.command) for r in of(events, ev.SimpleReply)] == [(5, Cmd.WRITE)]
    result = judge(script)
    assert _blamed(result) == []  # extents that cover less than the request: the rest was not captured
    assert fired(result, "capture-gap.header-only")[0].values["chunks"] == 1


def test_cut_chunk_keeps_the_problems_its_captured_bytes_decide() -> None:
    """A block status chunk whose length is no whole number of extents is wrong whatever was cut; a chunk
    cut before its context id is judged on nothing."""
    bad = w.chunk(9, ReplyType.BLOCK_STATUS, w.extents(7, [(4096, 0)] * 4) + b"\0\0\0", flags=1)
    for keep, problem in ((20 + 4 + 8, True), (20 + 2, False)):
        script = go() + [("c2s", w.request(Cmd.BLOCK_STATUS, 9, 0, 16384), None), ("s2c", bad, keep),
                         *transmission()]
        events = decode(script)
        (status,) = [c for c in of(events, ev.ReplyChunk) if c.reply_type == ReplyType.BLOCK_STATUS]
        assert status.lost == len(bad) - keep and (status.problem is not None) == problem, status.problem
        assert [(r.cookie, r.command) for r in of(events, ev.SimpleReply)] == [(5, Cmd.WRITE)]


def test_a_cut_past_the_message_or_into_its_header_loses_framing() -> None:
    """Only bytes inside the message whose header gave its length are passed over: lost bytes that run
    past its end took the next header with them, and a header cut short gives no length."""
    reply = w.opt_reply(Opt.SET_META_CONTEXT, Rep.META_CONTEXT, w.meta_context(7, "base:allocation"))
    ack = w.opt_reply(Opt.SET_META_CONTEXT, Rep.ACK)
    head: Cut = go()[:5]
    for message, keep in ((reply + ack, OPTION_REPLY_HEADER + 6), (reply, OPTION_REPLY_HEADER - 1)):
        events = decode([*head, ("s2c", message, keep)])
        assert [g.resync for g in of(events, ev.Gap)] == [True]
        assert not [r for r in of(events, ev.OptionReply) if r.reply == Rep.META_CONTEXT]
