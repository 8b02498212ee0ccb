"""Never the wrong culprit: disconnects the spec permits are not flagged, capture artifacts are the
capture's, the proxy's own actions are the proxy's, and a handshake that ended early says why.

Each test names the requirement rows it exercises (transmission-end.*, cmd-disc.1, haggle-end.7;
MAY rows transmission-end.may.1, cmd-read.may.1, sizes.may.8)."""

from __future__ import annotations

import struct

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine, Result
from tests import nbdwire as w
from tests.judging import analyze, fired, silent
from tests.wirescripts import handshake

READ, WRITE, DISC, CACHE = 0, 1, 2, 5
HAS_FLAGS, SEND_CACHE, CAN_MULTI_CONN = 1, 1 << 10, 1 << 8
DONE = 1
ERR = 1 << 31
EIO, ESHUTDOWN = 5, 108
GO, INFO, LIST, ABORT, EXPORT_NAME = 7, 6, 3, 2, 1
ACK, SERVER, REP_INFO = 1, 2, 3


def checks(result: Result) -> set[str]:
    return {a.check for a in result.anomalies}


def start() -> list[tuple[str, bytes]]:
    return [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]


# --------------------------------------------------------------- transmission disconnects

def test_client_closing_without_disc_breaks_transmission_end_7() -> None:
    """transmission-end.7: no disconnect other than those the section lists."""
    result = analyze(handshake(HAS_FLAGS, structured=False) + [("c2s", w.request(READ, 1, 0, 512)),
                                                               ("s2c", w.simple_reply(1, 0, bytes(512)))],
                     closed_by="c2s")
    hit = fired(result, "hard-disconnect.client-no-disc", blame="client")
    assert "without NBD_CMD_DISC" in hit[0].message and hit[0].severity == "error"
    assert checks(result) == {"hard-disconnect.client-no-disc"}


def test_server_closing_after_disc_is_the_soft_disconnect() -> None:
    """transmission-end.1: after NBD_CMD_DISC the server is the one that closes."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(DISC, 2, 0, 0))], closed_by="s2c")
    silent(result, "hard-disconnect")
    assert result.sessions[0].disconnect == "soft"


def test_client_may_close_after_the_server_broke_a_must() -> None:
    """transmission-end.may.1: a hard disconnect after the peer's violation is permitted."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 512)),
                                             ("s2c", b"\xde\xad\xbe\xef" + bytes(12))], closed_by="c2s")
    assert fired(result, "malformed-message.bad-magic", blame="server")
    silent(result, "hard-disconnect")


def test_server_may_close_after_a_read_error_in_a_simple_reply() -> None:
    """cmd-read.may.1: after a simple error reply to a read the server may hard-disconnect."""
    result = analyze(handshake(HAS_FLAGS, structured=False) + [
        ("c2s", w.request(READ, 1, 0, 512)), ("c2s", w.request(READ, 2, 512, 512)),
        ("s2c", w.simple_reply(1, EIO))], closed_by="s2c")
    silent(result, "hard-disconnect")


def test_server_may_close_after_a_hostile_payload_length() -> None:
    """sizes.may.8: a payload large enough to be a denial of service lets the other side close."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(WRITE, 1, 0, 1 << 30, data=bytes(64)))],
                     closed_by="s2c")
    silent(result, "hard-disconnect")


def test_server_dropping_requests_breaks_transmission_end_3() -> None:
    """transmission-end.3: a server should let in-flight requests finish before a hard disconnect."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 7, 0, 512))], closed_by="s2c")
    hit = fired(result, "hard-disconnect.server-dropped-requests", blame="server")
    assert "NBD_CMD_READ cookie 0x7" in hit[0].message and hit[0].severity == "warning"


def test_server_closing_an_idle_connection_is_not_judged() -> None:
    """transmission-end.3 permits a server shutdown; with nothing in flight nothing is lost."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 512)),
                                             ("s2c", w.simple_reply(1, 0, bytes(512)))], closed_by="s2c")
    silent(result, "hard-disconnect")


def test_disc_with_requests_in_flight_and_the_server_dropping_them() -> None:
    """transmission-end.6 (client waits for replies before DISC) and cmd-disc.1 (server answers them)."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 3, 0, 512)),
                                             ("c2s", w.request(DISC, 4, 0, 0))], closed_by="s2c")
    early = fired(result, "disconnect-protocol.disc-in-flight", blame="client")
    assert "cookie 0x3" in early[0].message and early[0].severity == "warning"
    dropped = fired(result, "hard-disconnect.disc-unanswered", blame="server")
    assert "cookie 0x3" in dropped[0].message and dropped[0].severity == "error"


def test_disc_answered_in_full_is_only_the_clients_haste() -> None:
    result = analyze(handshake(HAS_FLAGS, structured=False) + [
        ("c2s", w.request(READ, 3, 0, 512)), ("c2s", w.request(DISC, 4, 0, 0)),
        ("s2c", w.simple_reply(3, 0, bytes(512)))], closed_by="s2c")
    assert checks(result) == {"disconnect-protocol.disc-in-flight"}


def test_client_ignoring_eshutdown_breaks_transmission_end_5() -> None:
    """transmission-end.5: a client told NBD_ESHUTDOWN must disconnect softly."""
    result = analyze(handshake(HAS_FLAGS, structured=False) + [
        ("c2s", w.request(WRITE, 1, 0, 4, data=b"abcd")), ("s2c", w.simple_reply(1, ESHUTDOWN))], closed_by="c2s")
    hit = fired(result, "hard-disconnect.eshutdown-ignored", blame="client")
    assert "NBD_ESHUTDOWN" in hit[0].message
    silent(result, "hard-disconnect.client-no-disc")


# --------------------------------------------------------------- handshake disconnects and outcomes

def go_nosuch() -> list[tuple[str, bytes]]:
    return start() + [("c2s", w.option(GO, w.opt_go_data("nosuch"))),
                      ("s2c", w.opt_reply(GO, ERR | 6, b"export 'nosuch' not present"))]


def test_client_leaving_the_handshake_without_abort_breaks_haggle_end_7() -> None:
    """haggle-end.7: a client that ends the negotiation must do so with NBD_OPT_ABORT."""
    result = analyze(go_nosuch(), closed_by="c2s")
    fired(result, "hard-disconnect.client-no-abort", blame="client")


def test_abort_acknowledged_is_its_own_disconnect_and_the_failure_is_explained() -> None:
    result = analyze(go_nosuch() + [("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))], closed_by="s2c")
    silent(result, "hard-disconnect")
    s = result.sessions[0]
    assert s.disconnect == "abort" and s.outcome is not None
    hit = fired(result, "handshake-outcome.option-failed")
    assert hit[0].severity == "info"
    assert "NBD_OPT_GO 'nosuch' failed with NBD_REP_ERR_UNKNOWN" in hit[0].message
    assert "export 'nosuch' not present" in hit[0].message and "acknowledged" in hit[0].message
    j = s.as_json()["outcome"]
    assert j["option"] == "NBD_OPT_GO" and j["error"] == "NBD_REP_ERR_UNKNOWN"  # type: ignore[index]
    assert j["message"] == "export 'nosuch' not present" and j["abort_acked"] is True  # type: ignore[index]


def test_tls_required() -> None:
    script = start() + [("c2s", w.option(GO, w.opt_go_data(""))), ("s2c", w.opt_reply(GO, ERR | 5, b"TLS first")),
                        ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))]
    result = analyze(script, closed_by="c2s")
    hit = fired(result, "handshake-outcome.tls-required", blame="client")
    assert "requires TLS" in hit[0].message and "TLS first" in hit[0].message


def test_exports_listed_and_info_fills_the_export_facts() -> None:
    name = b"disk"
    script = start() + [
        ("c2s", w.option(LIST)), ("s2c", w.opt_reply(LIST, SERVER, struct.pack(">I", 4) + name)),
        ("s2c", w.opt_reply(LIST, ACK)),
        ("c2s", w.option(INFO, w.opt_go_data("disk", (2, 3)))),
        ("s2c", w.opt_reply(INFO, REP_INFO, w.info_export(1 << 20, HAS_FLAGS | SEND_CACHE))),
        ("s2c", w.opt_reply(INFO, REP_INFO, w.info_block_size(512, 4096, 1 << 25))),
        ("s2c", w.opt_reply(INFO, REP_INFO, struct.pack(">H", 2) + b"a test disk")),
        ("s2c", w.opt_reply(INFO, ACK)), ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))]
    result = analyze(script, closed_by="c2s")
    hit = fired(result, "handshake-outcome.exports-listed")
    assert "1: 'disk'" in hit[0].message
    s = result.sessions[0]
    assert (s.export_name, s.size, s.transmission_flags) == ("disk", 1 << 20, HAS_FLAGS | SEND_CACHE)
    assert (s.min_block, s.preferred_block, s.max_payload, s.description) == (512, 4096, 1 << 25, "a test disk")
    assert s.as_json()["export"]["description"] == "a test disk"  # type: ignore[index]


def test_info_only_and_client_aborted() -> None:
    info = start() + [("c2s", w.option(INFO, w.opt_go_data(""))),
                      ("s2c", w.opt_reply(INFO, REP_INFO, w.info_export(4096, HAS_FLAGS))),
                      ("s2c", w.opt_reply(INFO, ACK)), ("c2s", w.option(ABORT))]
    result = analyze(info, closed_by="c2s")
    fired(result, "handshake-outcome.info-only")
    bare = start() + [("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))]
    result = analyze(bare, closed_by="s2c")
    fired(result, "handshake-outcome.client-aborted")
    silent(result, "hard-disconnect")


def test_export_name_refused_closed_and_capture_ended() -> None:
    refused = start() + [("c2s", w.option(EXPORT_NAME, b"gone"))]
    result = analyze(refused, closed_by="s2c")
    assert "'gone'" in fired(result, "handshake-outcome.export-refused", blame="server")[0].message
    silent(result, "hard-disconnect")  # newstyle.7: the server must close there
    closed = start() + [("c2s", w.option(GO, w.opt_go_data("")))]
    result = analyze(closed, closed_by="s2c")
    fired(result, "handshake-outcome.closed", blame="server")
    fired(analyze(closed), "handshake-outcome.capture-ended", blame="capture")


def test_handshake_that_lost_framing_has_the_captures_outcome() -> None:
    engine, frame = engine_with(start() + [("c2s", w.option(GO, w.opt_go_data("")))])
    engine.feed(it.StreamGap(conn=1, dir="s2c", nbytes=7, frame=frame + 1, time=frame + 1))
    engine.feed(it.StreamData(conn=1, dir="s2c", data=w.opt_reply(GO, ERR | 6, b"no"), frame=frame + 2,
                              time=frame + 2))
    engine.feed(it.StreamClose(conn=1, how="fin", frame=frame + 3, time=frame + 3, by="c2s"))
    result = engine.finish()
    fired(result, "handshake-outcome.capture-lost", blame="capture")
    assert {a.blame for a in result.anomalies} == {"capture"}


def test_findings_about_peers_are_withheld_once_framing_is_lost() -> None:
    """A reply whose request the capture lost is not the server's invention."""
    engine, frame = engine_with(handshake(HAS_FLAGS, structured=False))
    engine.feed(it.StreamGap(conn=1, dir="c2s", nbytes=28, frame=frame + 1, time=frame + 1))  # a whole request
    engine.feed(it.StreamData(conn=1, dir="s2c", data=w.simple_reply(9, 0), frame=frame + 2, time=frame + 2))
    engine.feed(it.StreamData(conn=1, dir="c2s", data=w.request(READ, 1, 0, 4096) + w.request(READ, 1, 0, 4096),
                              frame=frame + 3, time=frame + 3))
    result = engine.finish()
    assert {a.blame for a in result.anomalies} == {"capture"}
    assert result.sessions[0].withheld >= 1


def test_handshake_inside_tls() -> None:
    script = start() + [("c2s", w.option(5)), ("s2c", w.opt_reply(5, ACK)),
                        ("c2s", b"\x16\x03\x01\x00\x05hello")]
    result = analyze(script, closed_by="c2s")
    fired(result, "handshake-outcome.inside-tls", blame="capture")
    silent(result, "hard-disconnect")


def test_sessions_reaching_transmission_have_no_outcome() -> None:
    result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(DISC, 1, 0, 0))], closed_by="s2c")
    assert result.sessions[0].outcome is None and result.sessions[0].as_json()["outcome"] is None
    silent(result, "handshake-outcome")


# --------------------------------------------------------------- capture artifacts

def engine_with(script: list[tuple[str, bytes]], saw_start: bool = True) -> tuple[Engine, int]:
    engine = Engine()
    engine.feed(it.StreamOpen(conn=1, client=it.Endpoint("10.0.0.1", 5), server=it.Endpoint("10.0.0.2", 10809),
                              frame=1, time=0, saw_start=saw_start, source="x"))
    frame = 1
    for d, data in script:
        frame += 1
        engine.feed(it.StreamData(conn=1, dir=d, data=data, frame=frame, time=frame))  # type: ignore[arg-type]
    return engine, frame


def test_capture_ending_mid_reply_is_the_captures() -> None:
    """No 'ended without DONE', no unanswered request held against a peer when the capture stopped."""
    script = handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 1024)), ("c2s", w.request(READ, 2, 0, 512)),
                                     ("s2c", w.chunk(1, 1, (0).to_bytes(8, "big") + bytes(512)))]
    result = analyze(script)
    hit = fired(result, "capture-gap.ended-mid-exchange", blame="capture")
    assert "2 request(s) unanswered" in hit[0].message and hit[0].severity == "info"
    assert {a.blame for a in result.anomalies} == {"capture"}


def test_client_closing_mid_reply_does_not_make_the_server_wrong() -> None:
    script = handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 1024)),
                                     ("s2c", w.chunk(1, 1, (0).to_bytes(8, "big") + bytes(512)))]
    result = analyze(script, closed_by="c2s")
    silent(result, "bad-reply-chunk")
    assert {a.blame for a in result.anomalies} == {"client"}


def test_capture_gaps_and_mid_stream_start() -> None:
    engine, frame = engine_with([("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512)))],
                                saw_start=False)
    for n in range(12):
        engine.feed(it.StreamGap(conn=1, dir="s2c", nbytes=100, frame=frame + n + 1, time=frame + n))
    result = engine.finish()
    assert len(fired(result, "capture-gap.lost-bytes", blame="capture")) == 10
    assert "12 gaps and 1200 bytes" in fired(result, "capture-gap.many-gaps", blame="capture")[0].message
    fired(result, "capture-gap.started-mid-stream", blame="capture")
    assert {a.blame for a in result.anomalies} == {"capture"}


def test_bad_bytes_after_lost_framing_are_the_captures() -> None:
    engine, frame = engine_with(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 512))])
    engine.feed(it.StreamGap(conn=1, dir="s2c", nbytes=30, frame=frame + 1, time=frame + 1))  # framing lost
    engine.feed(it.StreamData(conn=1, dir="s2c", data=bytes(8) + w.simple_reply(1, 0, bytes(512)),
                              frame=frame + 2, time=frame + 2))
    result = engine.finish()
    silent(result, "malformed-message.bad-magic", "malformed-message.undecodable-bytes")


def test_malformed_bytes_from_a_peer() -> None:
    """A client's garbage is the client's (bad magic, then the bytes skipped to the next header)."""
    result = analyze(handshake(HAS_FLAGS) + [("c2s", b"garbage!" + w.request(READ, 2, 0, 4))])
    assert fired(result, "malformed-message.bad-magic", blame="client")[0].frame == len(handshake(HAS_FLAGS)) + 1
    fired(result, "malformed-message.undecodable-bytes", blame="client")
    tls = start() + [("c2s", b"\x16\x03\x01\x00\x10" + bytes(16))]
    fired(analyze(tls), "malformed-message.tls-without-starttls", blame="client")
    engine, frame = engine_with([("c2s", b"\x00" * 8 + w.request(READ, 2, 0, 4))], saw_start=False)
    engine.feed(it.StreamData(conn=1, dir="s2c", data=b"\x01" * 4 + w.simple_reply(2, 0, bytes(4)), frame=frame + 1,
                              time=frame + 1))
    lost = engine.finish()
    silent(lost, "malformed-message.bad-magic", "malformed-message.undecodable-bytes")


def test_undecodable_bytes_after_a_mid_stream_start_are_the_captures() -> None:
    """The capture began inside a message: the bytes before the first header are the capture's, and
    so are bytes that do not frame later, since the decoder's footing there is a guess."""
    engine, _ = engine_with([("c2s", bytes(9) + w.request(READ, 1, 0, 4)),
                             ("s2c", b"\x07" * 9 + w.simple_reply(1, 0, bytes(4))),
                             ("s2c", b"\xde\xad\xbe\xef" + bytes(12))], saw_start=False)
    result = engine.finish()
    fired(result, "malformed-message.after-capture-loss", blame="capture")
    assert {a.blame for a in result.anomalies} == {"capture"}


# --------------------------------------------------------------- the proxy's own doing

def proxied(script: list[tuple[str, bytes]], notes: dict[int, it.StreamNote], close: str | None = "c2s") -> Result:
    """``script`` as one connection, with a proxy note before the message of that index."""
    engine = Engine()
    engine.feed(it.StreamOpen(conn=1, client=it.Endpoint("10.0.0.1", 5), server=it.Endpoint("10.0.0.2", 10809),
                              frame=1, time=0, saw_start=True, source="proxy"))
    frame = 1
    for i, (d, data) in enumerate(script):
        frame += 1
        if i in notes:
            engine.feed(notes[i])
        engine.feed(it.StreamData(conn=1, dir=d, data=data, frame=frame, time=frame))  # type: ignore[arg-type]
    for note in notes.get(-1, ()):  # type: ignore[attr-defined]
        engine.feed(note)
    if close:
        engine.feed(it.StreamClose(conn=1, how="fin", frame=frame + 1, time=frame + 1, by=close))  # type: ignore[arg-type]
    return engine.finish()


def test_flag_rewrite_judges_the_server_on_what_it_sent() -> None:
    """nbdkit sends SEND_CACHE and CAN_MULTI_CONN; the proxy clears SEND_CACHE; the client's CACHE is the
    client's doing, and the server's success is no sign of the qemu 3.0 bug."""
    sent, forwarded = HAS_FLAGS | SEND_CACHE | CAN_MULTI_CONN, HAS_FLAGS | CAN_MULTI_CONN
    script = handshake(forwarded, structured=False) + [("c2s", w.request(CACHE, 1, 0, 4096)),
                                                       ("s2c", w.simple_reply(1)), ("c2s", w.request(DISC, 2, 0, 0))]
    at = next(i for i, (d, data) in enumerate(script) if d == "s2c" and struct.pack(">H", forwarded) in data[-2:])
    note = it.StreamNote(1, "s2c", "nbdscope proxy rewrote transmission flags 0x0501 -> 0x0101", at + 2, at,
                         "rewrite-flags", (("forwarded", forwarded), ("sent", sent)))
    result = proxied(script, {at: note}, close="s2c")
    s = result.sessions[0]
    assert (s.transmission_flags, s.server_flags) == (forwarded, sent)
    assert s.as_json()["export"]["server_transmission_flags"] == sent  # type: ignore[index]
    hit = fired(result, "proxy-action.rewrote-flags", blame="proxy")
    assert "0x0501 -> 0x0101" in hit[0].message
    assert [a.blame for a in result.anomalies if a.rule == "cache-flag-mismatch"] == ["client"]
    assert not [a for a in result.anomalies if a.blame == "server"]


def test_rewritten_flags_are_not_the_servers_reserved_bits() -> None:
    script = handshake(HAS_FLAGS | 1 << 15, structured=False)
    at = next(i for i, (d, data) in enumerate(script) if d == "s2c" and data.endswith(struct.pack(">H", 0x8001)))
    note = it.StreamNote(1, "s2c", "rewrote", at + 2, at, "rewrite-flags", (("forwarded", 0x8001), ("sent", 1)))
    result = proxied(script, {at: note}, close=None)
    assert not [a for a in result.anomalies if a.blame == "server"], result.anomalies


def test_delay_and_closing_at_shutdown_are_the_proxys() -> None:
    script = handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 512)), ("c2s", w.request(READ, 2, 0, 512))]
    n = len(script)
    delays = {i: it.StreamNote(1, "c2s", "NBD_CMD_READ (5 ms) delayed by nbdscope proxy (--delay)", i + 2, i, "delay")
              for i in (n - 2, n - 1)}
    close = it.StreamNote(1, "c2s", "nbdscope proxy closed this session at shutdown", n + 2, n, "closed-at-shutdown")
    result = proxied(script, {**delays, -1: [close]}, close="c2s")  # type: ignore[dict-item]
    assert len(fired(result, "proxy-action.delayed", blame="proxy")) == 2
    fired(result, "proxy-action.closed-at-shutdown", blame="proxy")
    silent(result, "hard-disconnect", "bad-reply-chunk")
    assert {a.blame for a in result.anomalies} == {"proxy"}
    assert [a for a, _, _ in result.sessions[0].proxy_actions] == ["delay", "delay", "closed-at-shutdown"]


def test_an_upstream_that_refused_the_proxy_is_the_proxys_record_not_a_peers_fault() -> None:
    """proxy-action.upstream-failed: the proxy accepted a client but could not reach the server; the
    session is recorded, the client's greeting-less close is nobody's fault."""
    note = it.StreamNote(1, "s2c", "nbdscope proxy could not connect to the upstream: Connection refused", 2, 1,
                         "upstream-failed")
    result = proxied([("c2s", b"")], {0: note}, close="s2c")
    fired(result, "proxy-action.upstream-failed", blame="proxy")
    assert {a.blame for a in result.anomalies} == {"proxy"}


def test_a_handshake_the_proxy_closed_at_shutdown_is_the_proxys_outcome() -> None:
    """A client still haggling when the proxy shut down (a second Ctrl-C): the connection ends by the
    client's socket, but the proxy closed it, and neither the outcome nor its blame may say the client did."""
    script = start()  # the greeting and the client flags: options come next
    close = it.StreamNote(1, "c2s", "nbdscope proxy closed this session at shutdown", 5, 4, "closed-at-shutdown")
    result = proxied(script, {-1: [close]}, close="c2s")  # type: ignore[dict-item]
    hit = fired(result, "handshake-outcome.closed", blame="proxy")
    assert hit[0].message.startswith("the nbdscope proxy closed the connection during the handshake")
    assert {a.blame for a in result.anomalies} == {"proxy"}
