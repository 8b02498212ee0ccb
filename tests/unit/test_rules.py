"""Rule tests: hand-built sessions through the whole engine; each case states
the spec requirement it breaks and checks the rule id, blame and key values."""

from __future__ import annotations

from nbdscope import vocab as it
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Engine, Result
from tests import nbdwire as w
from tests.judging import analyze
from tests.wirescripts import handshake

READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZEROES, BSTATUS = range(8)
DONE = 1
HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA = 1, 2, 4, 8
SEND_TRIM, SEND_WZ, SEND_DF, MULTI, SEND_CACHE = 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 10


def found(result: Result, rule: str) -> list[Anomaly]:
    return [a for a in result.anomalies if a.rule == rule]


def test_clean_session_has_no_anomalies() -> None:
    script = handshake(HAS_FLAGS | SEND_FLUSH | SEND_FUA, block=(512, 4096, 1 << 25)) + [
        ("c2s", w.request(WRITE, 1, 0, 512, flags=1, data=bytes(512))), ("s2c", w.simple_reply(1)),
        ("c2s", w.request(READ, 2, 512, 1024)),
        ("s2c", w.chunk(2, 1, (512).to_bytes(8, "big") + bytes(512))),
        ("s2c", w.chunk(2, 2, (1024).to_bytes(8, "big") + (512).to_bytes(4, "big"), DONE)),
        ("c2s", w.request(BSTATUS, 3, 0, 4096)), ("s2c", w.chunk(3, 5, w.extents(1, [(4096, 0)]), DONE)),
        ("c2s", w.request(FLUSH, 4, 0, 0)), ("s2c", w.simple_reply(4)),
        ("c2s", w.request(DISC, 5, 0, 0))]
    result = analyze(script)
    assert result.anomalies == []


def test_seed_unaligned_extent() -> None:
    script = handshake(HAS_FLAGS, size=1024, block=(512, 4096, 1 << 25)) + [
        ("c2s", w.request(BSTATUS, 1, 0, 1024)),
        ("s2c", w.chunk(1, 5, w.extents(1, [(1000, 0), (24, 3)]), DONE)), ("c2s", w.request(DISC, 2, 0, 0))]
    hits = found(analyze(script), "unaligned-extent")
    assert len(hits) == 1
    assert hits[0].blame == "server" and hits[0].values["length"] == 1000 and hits[0].values["offset"] == 0
    assert hits[0].message == "extent of 1000 bytes at offset 0 is not a multiple of the minimum block size 512"


def test_final_extent_at_unaligned_export_end_is_allowed() -> None:
    script = handshake(HAS_FLAGS, size=1000, block=(512, 4096, 1 << 25)) + [
        # the single (final) extent may run past the request, and ends exactly at the unaligned export end
        ("c2s", w.request(BSTATUS, 1, 0, 512)), ("s2c", w.chunk(1, 5, w.extents(1, [(1000, 0)]), DONE)),
        ("c2s", w.request(BSTATUS, 2, 0, 512)), ("s2c", w.chunk(2, 5, w.extents(1, [(512, 0), (488, 3)]), DONE))]
    result = analyze(script)
    hits = found(result, "unaligned-extent")
    # but extents after the one that reaches the end of the request are not allowed
    assert len(hits) == 1 and hits[0].values["cookie"] == 2 and "more extents follow" in hits[0].message
    size = found(result, "size-not-block-multiple")
    assert len(size) == 1 and size[0].values == {"size": 1000, "min_block": 512}


def test_extent_past_export_and_zero_length() -> None:
    script = handshake(HAS_FLAGS, size=4096, block=(512, 4096, 1 << 25)) + [
        ("c2s", w.request(BSTATUS, 1, 3584, 512)), ("s2c", w.chunk(1, 5, w.extents(1, [(0, 0), (1024, 0)]), DONE))]
    msgs = [a.message for a in found(analyze(script), "unaligned-extent")]
    # the zero-length extent is an error; a final extent past the export's end breaks no statement
    assert any("length 0" in m for m in msgs) and not any("past the export" in m for m in msgs)


def test_cache_flag_mismatch_client_side() -> None:
    script = handshake(HAS_FLAGS | MULTI) + [("c2s", w.request(CACHE, 1, 0, 4096)), ("s2c", w.simple_reply(1, 22))]
    hits = found(analyze(script), "cache-flag-mismatch")
    assert len(hits) == 1 and hits[0].blame == "client" and "bit 8" in hits[0].message


def test_cache_flag_mismatch_server_side_names_other_connections() -> None:
    one = handshake(HAS_FLAGS | MULTI | SEND_FLUSH) + [("c2s", w.request(CACHE, 1, 0, 4096)), ("s2c", w.simple_reply(1)),
                                                       ("c2s", w.request(WRITE, 2, 0, 1, data=b"x"))]
    two = handshake(HAS_FLAGS | MULTI | SEND_FLUSH) + [("c2s", w.request(WRITE, 1, 0, 1, data=b"x"))]
    hits = found(analyze(one, two), "cache-flag-mismatch")
    server = [a for a in hits if a.blame == "server"]
    assert len(server) == 1  # one hazard, once writers are seen relying on bit 8
    assert "qemu 3.0" in server[0].message and server[0].values["sessions"] == ["s1", "s2"]


def test_requests_against_size_constraints() -> None:
    script = handshake(HAS_FLAGS | SEND_TRIM, size=8192, block=(512, 4096, 65536)) + [
        ("c2s", w.request(READ, 1, 100, 512)), ("c2s", w.request(READ, 2, 7680, 1024)),
        ("c2s", w.request(WRITE, 3, 0, 131072, data=bytes(131072))), ("c2s", w.request(FLUSH, 4, 0, 0)),
        ("c2s", w.request(ZEROES, 5, 0, 512, flags=1 << 1))]
    result = analyze(script)
    assert [a.values["offset"] for a in found(result, "unaligned-request")] == [100]
    assert [a.values["cookie"] for a in found(result, "request-beyond-export")] == [2, 3]
    assert [a.values["max_payload"] for a in found(result, "payload-too-large")] == [65536]
    assert sorted(a.message.split(" sent")[0] for a in found(result, "command-not-advertised")) == [
        "NBD_CMD_FLUSH", "NBD_CMD_WRITE_ZEROES"]


def test_flags_not_advertised_or_not_valid() -> None:
    script = handshake(HAS_FLAGS | SEND_WZ) + [
        ("c2s", w.request(WRITE, 1, 0, 1, flags=1, data=b"x")), ("c2s", w.request(READ, 2, 0, 1, flags=1 << 2)),
        ("c2s", w.request(ZEROES, 3, 0, 1, flags=1 << 4)), ("c2s", w.request(READ, 4, 0, 1, flags=1 << 3))]
    msgs = [a.message for a in found(analyze(script), "flag-not-advertised")]
    assert any("FUA without" in m for m in msgs) and any("DF without" in m for m in msgs)
    assert any("FAST_ZERO without" in m for m in msgs) and any("REQ_ONE is not documented for NBD_CMD_READ" in m for m in msgs)


def test_write_to_read_only_and_server_success() -> None:
    script = handshake(HAS_FLAGS | READ_ONLY) + [("c2s", w.request(WRITE, 1, 0, 1, data=b"x")), ("s2c", w.simple_reply(1))]
    hits = found(analyze(script), "write-to-read-only")
    assert [(a.blame, a.severity) for a in hits] == [("server", "error")]  # trying to write is no fault


def test_multi_conn_without_flag() -> None:
    def conn(cookie: int) -> list[tuple[str, bytes]]:
        return handshake(HAS_FLAGS | SEND_FLUSH) + [("c2s", w.request(WRITE, cookie, 0, 1, data=b"x"))]
    hits = found(analyze(conn(1), conn(2)), "multi-conn-without-flag")
    assert len(hits) == 1 and hits[0].values["sessions"] == ["s1", "s2"]
    ok = [handshake(HAS_FLAGS | SEND_FLUSH | MULTI) + [("c2s", w.request(WRITE, c, 0, 1, data=b"x"))] for c in (1, 2)]
    assert found(analyze(*ok), "multi-conn-without-flag") == []


def test_cookie_reuse_unmatched_and_double_reply() -> None:
    script = handshake(HAS_FLAGS | SEND_FLUSH, structured=False) + [
        ("c2s", w.request(FLUSH, 1, 0, 0) + w.request(FLUSH, 1, 0, 0)),
        ("s2c", w.simple_reply(1) + w.simple_reply(1)), ("s2c", w.simple_reply(99, 5)),
        ("c2s", w.request(FLUSH, 2, 0, 0)), ("s2c", w.simple_reply(2) + w.simple_reply(2))]
    result = analyze(script)
    assert len(found(result, "cookie-reuse")) == 1
    unmatched = found(result, "unmatched-reply")  # the reused cookie's two replies each answer a request
    assert len(unmatched) == 2 and "no request" in unmatched[0].message and "second reply" in unmatched[1].message


def test_reply_styles() -> None:
    plain = handshake(HAS_FLAGS, structured=False) + [("c2s", w.request(READ, 1, 0, 8)),
                                                     ("s2c", w.chunk(1, 0, b"", DONE))]
    assert len(found(analyze(plain), "structured-reply-not-negotiated")) == 1
    structured = handshake(HAS_FLAGS) + [("c2s", w.request(READ, 1, 0, 8)), ("s2c", w.simple_reply(1, 0, bytes(8)))]
    assert len(found(analyze(structured), "simple-reply-to-structured-read")) == 1


def test_bad_read_chunks() -> None:
    script = handshake(HAS_FLAGS) + [
        ("c2s", w.request(READ, 1, 4096, 1024)),
        ("s2c", w.chunk(1, 1, (4096).to_bytes(8, "big") + bytes(512))),
        ("s2c", w.chunk(1, 1, (4096 + 256).to_bytes(8, "big") + bytes(256))),
        ("s2c", w.chunk(1, 2, (8192).to_bytes(8, "big") + (16).to_bytes(4, "big"))),
        ("s2c", w.chunk(1, 0, b"", DONE)),
        ("s2c", w.chunk(1, 0, b"", DONE)),
        ("c2s", w.request(WRITE, 2, 0, 1, data=b"x")), ("s2c", w.chunk(2, 5, w.extents(1, [(512, 0)]), DONE)),
        ("c2s", w.request(READ, 3, 0, 512)), ("s2c", w.chunk(3, 0, b""))]
    msgs = [a.message for a in found(analyze(script, closed_by="s2c"), "bad-reply-chunk")]  # the server closed
    assert any("outside the request" in m for m in msgs)
    assert any("overlapping the earlier content chunk" in m for m in msgs)
    assert not any("leaves" in m for m in msgs)  # coverage is not judged again once a chunk was reported
    assert any("after its reply was already complete" in m for m in msgs)
    assert any("not a valid reply to NBD_CMD_WRITE" in m for m in msgs)
    assert any("NONE without NBD_REPLY_FLAG_DONE" in m for m in msgs)
    assert not any("without a chunk marked DONE" in m for m in msgs)  # the capture ended mid-reply: not the server's


def test_reserved_bits_and_unknown_command() -> None:
    script = [("s2c", w.greeting_newstyle(0b111)), ("c2s", w.client_flags(0b1011)),
              ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(4096, 1 | 1 << 15))),
              ("s2c", w.opt_reply(7, 1)), ("c2s", w.request(READ, 1, 0, 512, flags=1 << 9)),
              ("c2s", w.request(42, 2, 0, 0))]
    result = analyze(script)
    reserved = found(result, "reserved-bits-set")
    assert [(a.blame, a.severity) for a in reserved] == [("server", "error"), ("client", "error"),
                                                          ("server", "info"), ("client", "error")]
    assert [a.values["command"] for a in found(result, "unknown-command")] == [42]


def test_option_protocol_findings() -> None:
    script = [("s2c", w.greeting_newstyle(0b01)), ("c2s", w.client_flags(0b11)),
              ("c2s", w.option(10, w.opt_meta_data("", ["base:allocation", "qemu:dirty-bitmap:b"]))),
              ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))),
              ("s2c", w.opt_reply(10, 4, w.meta_context(1, "qemu:dirty-bitmap:b"))), ("s2c", w.opt_reply(10, 1)),
              ("c2s", w.option(7, w.opt_go_data("", (3,)))), ("s2c", w.opt_reply(7, 3, w.info_block_size(1000, 256, 128))),
              ("s2c", w.opt_reply(7, 1))]
    result = analyze(script)
    msgs = [a.message for a in found(result, "option-protocol")]
    assert any("NO_ZEROES" in m for m in msgs)
    assert any("before structured replies" in m for m in msgs)
    assert any("context id 1 given to both" in m for m in msgs)
    assert any("without an NBD_INFO_EXPORT" in m for m in msgs)
    # the block sizes' relations are block-size-invalid's: minimum 1000, preferred 256, maximum 128
    assert {a.check for a in found(result, "block-size-invalid")} == {
        "block-size-invalid.minimum", "block-size-invalid.preferred", "block-size-invalid.maximum"}


def test_tls_downgrade_and_tls_without_starttls() -> None:
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
              ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, (1 << 31) | 5)),
              ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(4096, 1))),
              ("s2c", w.opt_reply(7, 1))]
    msgs = [(a.blame, a.message) for a in found(analyze(script), "tls-protocol")]
    # the client may go on in plaintext after TLS_REQD; serving that same export in plaintext is the fault
    assert len(msgs) == 1 and msgs[0][0] == "server" and "served in plaintext" in msgs[0][1]
    early = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", b"\x16\x03\x01\x00\x10" + bytes(16))]
    assert len(found(analyze(early), "tls-protocol")) == 1


def test_hard_disconnect_names_unanswered() -> None:
    engine_result = analyze(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 7, 0, 512))])
    assert found(engine_result, "hard-disconnect") == []  # end of capture is not a disconnect
    engine = Engine()
    engine.feed(it.StreamOpen(conn=1, client=it.Endpoint("::1", 5), server=it.Endpoint("::1", 10809), frame=1,
                              time=0, saw_start=True, source="x"))
    for i, (d, data) in enumerate(handshake(HAS_FLAGS) + [("c2s", w.request(READ, 7, 0, 512))]):
        engine.feed(it.StreamData(conn=1, dir=d, data=data, frame=i + 2, time=i))  # type: ignore[arg-type]
    engine.feed(it.StreamClose(conn=1, how="rst", frame=99, time=99, by="s2c"))
    hits = found(engine.finish(), "hard-disconnect")
    assert len(hits) == 1 and "NBD_CMD_READ cookie 0x7" in hits[0].message


def test_go_must_repeat_the_info_answer() -> None:
    info = w.opt_go_data("d", (3,))
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
              ("c2s", w.option(6, info)), ("s2c", w.opt_reply(6, 3, w.info_export(0, 1))), ("s2c", w.opt_reply(6, 1)),
              ("c2s", w.option(7, info)), ("s2c", w.opt_reply(7, 3, w.info_export(4096, 1))), ("s2c", w.opt_reply(7, 1))]
    hits = [a for a in found(analyze(script), "option-protocol") if "answered differently" in a.message]
    assert len(hits) == 1 and "size 0 vs 4096" in hits[0].message
    # an intervening option lifts the requirement
    script[5:5] = [("c2s", w.option(8)), ("s2c", w.opt_reply(8, 1))]
    assert not [a for a in found(analyze(script), "option-protocol") if "answered differently" in a.message]


def test_stale_read_after_acknowledged_write() -> None:
    new, old = b"N" * 1024, b"O" * 1024
    script = handshake(HAS_FLAGS | SEND_WZ, structured=False) + [
        ("c2s", w.request(WRITE, 1, 4096, 1024, data=new)), ("s2c", w.simple_reply(1)),
        ("c2s", w.request(READ, 2, 4096, 1024)), ("s2c", w.simple_reply(2, 0, new)),  # fine
        ("c2s", w.request(READ, 3, 3584, 2048)), ("s2c", w.simple_reply(3, 0, bytes(512) + old + bytes(512))),
        ("c2s", w.request(ZEROES, 4, 0, 512)), ("s2c", w.simple_reply(4)),
        ("c2s", w.request(READ, 5, 0, 512)), ("s2c", w.simple_reply(5, 0, b"x" * 512)),
    ]
    hits = found(analyze(script, keep_data=True), "stale-read")
    assert [(a.values["offset"], a.values["cookie"]) for a in hits] == [(4096, 3), (0, 5)]
    assert found(analyze(script), "stale-read") == []  # data is only kept when asked


def test_racing_write_is_not_a_stale_read() -> None:
    new = b"N" * 512
    script = handshake(HAS_FLAGS, structured=False) + [
        ("c2s", w.request(WRITE, 1, 0, 512, data=new)), ("s2c", w.simple_reply(1)),
        # the read is sent while a second write to the same sector is in flight: either answer is valid
        ("c2s", w.request(WRITE, 2, 0, 512, data=b"M" * 512) + w.request(READ, 3, 0, 512)),
        ("s2c", w.simple_reply(3, 0, b"M" * 512) + w.simple_reply(2)),
    ]
    assert found(analyze(script, keep_data=True), "stale-read") == []


def test_stale_read_across_connections_needs_flush_and_multi_conn() -> None:
    new = b"N" * 4096

    def writer(tflags: int, flush: bool) -> list[tuple[str, bytes]]:
        s = handshake(tflags, structured=False) + [("c2s", w.request(WRITE, 1, 0, 4096, data=new)),
                                                    ("s2c", w.simple_reply(1))]
        return s + ([("c2s", w.request(FLUSH, 2, 0, 0)), ("s2c", w.simple_reply(2))] if flush else [])

    def reader(tflags: int) -> list[tuple[str, bytes]]:
        return handshake(tflags, structured=False) + [("c2s", w.request(READ, 7, 0, 4096)),
                                                      ("s2c", w.simple_reply(7, 0, bytes(4096)))]

    flags = HAS_FLAGS | SEND_FLUSH | MULTI
    hits = found(analyze(writer(flags, True), reader(flags), keep_data=True), "stale-read")
    assert len(hits) == 1 and hits[0].session == "s2" and hits[0].values["writer"] == "s1"
    assert hits[0].values["flush_frame"] is not None and "CAN_MULTI_CONN" in hits[0].message
    assert found(analyze(writer(flags, False), reader(flags), keep_data=True), "stale-read") == []
    no_multi = HAS_FLAGS | SEND_FLUSH
    assert found(analyze(writer(no_multi, True), reader(no_multi), keep_data=True), "stale-read") == []


def test_block_status_zero_over_written_data() -> None:
    script = handshake(HAS_FLAGS) + [
        ("c2s", w.request(WRITE, 1, 0, 4096, data=b"D" * 4096)), ("s2c", w.simple_reply(1)),
        ("c2s", w.request(BSTATUS, 2, 0, 8192)), ("s2c", w.chunk(2, 5, w.extents(1, [(8192, 3)]), DONE))]
    hits = found(analyze(script, keep_data=True), "stale-read")
    assert len(hits) == 1 and "block status says zero" in hits[0].message


def test_header_styles_must_match_negotiation() -> None:
    ext = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", w.option(11)), ("s2c", w.opt_reply(11, 1)),
           ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(1 << 20, HAS_FLAGS))),
           ("s2c", w.opt_reply(7, 1))]
    script = ext + [("c2s", w.request(READ, 1, 0, 512)),  # compact request under extended headers
                    ("s2c", w.simple_reply(1, 22)),  # simple reply under extended headers
                    ("c2s", w.ext_request(FLUSH, 2, 0, 0)), ("s2c", w.chunk(2, 0, b"", DONE))]  # 20-byte chunk
    # under extended headers each style fault is one finding, extended-headers'
    result = analyze(script)
    assert {a.check for a in found(result, "extended-headers")} == {
        "extended-headers.compact-request", "extended-headers.simple-reply", "extended-headers.structured-chunk"}
    assert found(result, "structured-reply-not-negotiated") == []
    plain = handshake(HAS_FLAGS, structured=False) + [("c2s", w.ext_request(READ, 1, 0, 8)),
                                                      ("s2c", w.ext_chunk(1, 0, 0, b"", DONE))]
    result = analyze(plain)
    msgs = [a.message for a in found(result, "structured-reply-not-negotiated")]
    assert len(msgs) == 1 and "extended (32-byte) request" in msgs[0]
    assert [a.check for a in found(result, "extended-headers")] == ["extended-headers.extended-reply-unagreed"]


def test_transmission_flags_that_contradict_themselves() -> None:
    script = handshake(SEND_DF | (1 << 11) | (1 << 12), structured=False)
    result = analyze(script)
    msgs = [a.message for a in found(result, "transmission-flags-invalid")]
    assert len(msgs) == 3  # HAS_FLAGS clear, FAST_ZERO w/o WRITE_ZEROES, DF w/o structured
    # and BLOCK_STATUS_PAYLOAD without extended headers, once, as extended-headers'
    assert [a.check for a in found(result, "extended-headers")] == ["extended-headers.block-status-payload-unagreed"]


def test_reply_with_an_error_chunk_then_done_is_a_failure() -> None:
    script = handshake(HAS_FLAGS | READ_ONLY) + [
        ("c2s", w.request(WRITE, 1, 0, 1, data=b"x")),
        ("s2c", w.chunk(1, 0x8001, w.error_payload(1, "read-only"))), ("s2c", w.chunk(1, 0, b"", DONE))]
    hits = found(analyze(script), "write-to-read-only")
    assert hits == []  # the server failed the write with NBD_EPERM, as it should: not blamed


def test_capture_gap_and_malformed_message() -> None:
    engine = Engine()
    engine.feed(it.StreamOpen(conn=1, client=it.Endpoint("10.0.0.1", 5), server=it.Endpoint("10.0.0.2", 10809),
                              frame=1, time=0, saw_start=True, source="x"))
    script = handshake(HAS_FLAGS, structured=False) + [("c2s", w.request(WRITE, 1, 0, 100, data=bytes(40)))]
    for i, (d, data) in enumerate(script):
        engine.feed(it.StreamData(conn=1, dir=d, data=data, frame=i + 2, time=i))  # type: ignore[arg-type]
    engine.feed(it.StreamGap(conn=1, dir="c2s", nbytes=60, frame=50, time=50))  # inside the write payload
    engine.feed(it.StreamData(conn=1, dir="c2s", data=b"garbage!" + w.request(READ, 2, 0, 4), frame=51, time=51))
    result = engine.finish()
    gaps = [a for a in found(result, "capture-gap") if a.check == "capture-gap.lost-bytes"]
    assert len(gaps) == 1 and gaps[0].blame == "capture" and gaps[0].values["nbytes"] == 60
    bad = found(result, "malformed-message")
    assert bad and bad[0].blame == "client" and bad[0].frame == 51


def test_fragmented_reply_to_a_df_read_and_empty_hole() -> None:
    script = handshake(HAS_FLAGS | SEND_DF) + [
        ("c2s", w.request(READ, 1, 0, 1024, flags=1 << 2)),
        ("s2c", w.chunk(1, 1, (0).to_bytes(8, "big") + bytes(512))),
        ("s2c", w.chunk(1, 1, (512).to_bytes(8, "big") + bytes(512), DONE)),
        ("c2s", w.request(READ, 2, 0, 512)),
        ("s2c", w.chunk(2, 2, (0).to_bytes(8, "big") + (0).to_bytes(4, "big"))),
        ("s2c", w.chunk(2, 1, (0).to_bytes(8, "big") + bytes(512), DONE))]
    msgs = [a.message for a in found(analyze(script), "bad-reply-chunk")]
    assert sum("NBD_CMD_FLAG_DF" in m for m in msgs) == 1 and sum("hole size of 0" in m for m in msgs) == 1
