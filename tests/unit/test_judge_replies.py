"""Firing and silence tests of the replies part: cookies, reply styles, chunks, error values,
disconnects (requirement ids in nbdscope/spec/requirements/replies.toml)."""

from __future__ import annotations

import struct

from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations
from tests.wirescripts import handshake

READ, WRITE, DISC, FLUSH, TRIM, WZ = 0, 1, 2, 3, 4, 6
HAS, RO, SFLUSH, SFUA, STRIM, SWZ, SDF = 1, 2, 4, 8, 32, 64, 128
DONE = 1
DF_FLAG = 1 << 2
NONE, DATA, HOLE, ERR, ERR_OFF = 0, 1, 2, 0x8001, 0x8002
TF = HAS | SFLUSH | SFUA | STRIM | SWZ | SDF


def data(offset: int, n: int) -> bytes:
    return struct.pack(">Q", offset) + bytes(n)


def hole(offset: int, n: int) -> bytes:
    return struct.pack(">QI", offset, n)


def checks(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {a.check for a in violations(result)}


def read_with(*chunks: bytes, length: int = 1024, offset: int = 0, flags: int = 0, tflags: int = TF):  # type: ignore[no-untyped-def]
    return analyze(handshake(tflags) + [("c2s", w.request(READ, 1, offset, length, flags=flags))]
                   + [("s2c", c) for c in chunks])


# ---------------------------------------------------------------- cookies and matching

def test_cookie_reuse_is_one_finding_even_when_both_replies_come() -> None:
    """transmission.2: reuse while in flight; the two replies then match no finding of their own."""
    result = analyze(handshake(TF) + [
        ("c2s", w.request(READ, 5, 0, 512) + w.request(READ, 5, 4096, 512)),
        ("s2c", w.chunk(5, DATA, data(4096, 512), DONE)), ("s2c", w.chunk(5, DATA, data(0, 512), DONE))])
    hits = fired(result, "cookie-reuse.in-flight", blame="client")
    assert "0x5" in hits[0].message
    assert checks(result) == {"cookie-reuse.in-flight"}


def test_cookie_reused_after_its_reply_is_silent() -> None:
    """transmission.may.1: a cookie may be used again once answered."""
    result = analyze(handshake(TF) + [
        ("c2s", w.request(FLUSH, 5, 0, 0)), ("s2c", w.simple_reply(5)),
        ("c2s", w.request(FLUSH, 5, 0, 0)), ("s2c", w.simple_reply(5))])
    assert result.anomalies == []


def test_unknown_cookie_and_second_reply() -> None:
    """transmission.3: a reply's cookie is the request's."""
    result = analyze(handshake(TF) + [("c2s", w.request(FLUSH, 1, 0, 0)), ("s2c", w.simple_reply(0x63))])
    assert "0x63" in fired(result, "unmatched-reply.unknown-cookie", blame="server")[0].message
    result = analyze(handshake(TF) + [("c2s", w.request(FLUSH, 1, 0, 0)), ("s2c", w.simple_reply(1)),
                                      ("s2c", w.simple_reply(1))])
    assert checks(result) == {"unmatched-reply.second-reply"}
    fired(result, "unmatched-reply.second-reply", blame="server")


def test_replies_out_of_request_order_are_silent() -> None:
    """ordering.may.2: replies in another order than the requests."""
    result = analyze(handshake(TF) + [
        ("c2s", w.request(READ, 1, 0, 512) + w.request(READ, 2, 512, 512) + w.request(FLUSH, 3, 0, 0)),
        ("s2c", w.simple_reply(3)), ("s2c", w.chunk(2, DATA, data(512, 512), DONE)),
        ("s2c", w.chunk(1, HOLE, hole(0, 256))), ("s2c", w.chunk(1, DATA, data(256, 256), DONE))])
    assert result.anomalies == []


# ---------------------------------------------------------------- reply styles

def test_structured_chunk_without_negotiation() -> None:
    """transmission.1, simple-reply.1, chunk.1, cmd-read.1, cmd-read.4."""
    result = analyze(handshake(HAS, structured=False) + [("c2s", w.request(READ, 1, 0, 8)),
                                                        ("s2c", w.chunk(1, NONE, b"", DONE))])
    fired(result, "structured-reply-not-negotiated.structured-without-negotiation", blame="server")


def test_simple_replies_to_a_structured_read() -> None:
    """chunk.2, chunk.3, cmd-read.9: with data and with an error."""
    result = analyze(handshake(TF) + [("c2s", w.request(READ, 2, 0, 8)), ("s2c", w.simple_reply(2, 0, bytes(8)))])
    assert "8 bytes" in fired(result, "simple-reply-to-structured-read.with-data", blame="server")[0].message
    result = analyze(handshake(TF) + [("c2s", w.request(READ, 2, 0, 8)), ("s2c", w.simple_reply(2, 22))])
    assert "error 22" in fired(result, "simple-reply-to-structured-read.with-error")[0].message
    assert checks(result) == {"simple-reply-to-structured-read.with-error"}


def test_structured_and_simple_replies_to_other_commands_are_silent() -> None:
    """simple-reply.may.1, chunk.may.1: non-read commands may get either reply style."""
    result = analyze(handshake(TF) + [
        ("c2s", w.request(WRITE, 1, 0, 4, data=b"abcd")), ("s2c", w.chunk(1, NONE, b"", DONE)),
        ("c2s", w.request(FLUSH, 2, 0, 0)), ("s2c", w.chunk(2, ERR, w.error_payload(5, "io"), DONE)),
        ("c2s", w.request(TRIM, 3, 0, 512)), ("s2c", w.chunk(3, ERR_OFF, w.error_payload(5, "io", 0), DONE)),
        ("c2s", w.request(WZ, 4, 0, 512)), ("s2c", w.simple_reply(4)),
        ("c2s", w.request(WRITE, 5, 0, 4, data=b"abcd")), ("s2c", w.simple_reply(5, 5))])
    assert result.anomalies == []


def test_header_style_checks() -> None:
    """Extended-header agreement (ext rows linked at merge)."""
    ext = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", w.option(11)), ("s2c", w.opt_reply(11, 1)),
           ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(1 << 20, HAS))),
           ("s2c", w.opt_reply(7, 1))]
    result = analyze(ext + [("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.simple_reply(1, 22)),
                            ("c2s", w.ext_request(FLUSH, 2, 0, 0)), ("s2c", w.chunk(2, NONE, b"", DONE))])
    # under extended headers the header style is extended-headers' alone: one finding per violation
    fired(result, "extended-headers.compact-request", blame="client")
    fired(result, "extended-headers.simple-reply", blame="server")
    fired(result, "extended-headers.structured-chunk", blame="server")
    assert not [a for a in result.anomalies if a.rule == "structured-reply-not-negotiated"]
    plain = analyze(handshake(HAS, structured=False) + [("c2s", w.ext_request(FLUSH, 1, 0, 0)),
                                                       ("s2c", w.ext_chunk(1, NONE, 0, b"", DONE))])
    fired(plain, "structured-reply-not-negotiated.request-header-style", blame="client")
    fired(plain, "structured-reply-not-negotiated.extended-without-negotiation", blame="server")


# ---------------------------------------------------------------- chunk shapes

def test_chunk_after_done() -> None:
    """chunk.5, replyflags.1; chunk.may.2: several chunks before DONE are fine."""
    result = read_with(w.chunk(1, DATA, data(0, 1024)), w.chunk(1, NONE, b"", DONE), w.chunk(1, NONE, b"", DONE))
    assert checks(result) == {"bad-reply-chunk.after-done"}
    fired(result, "bad-reply-chunk.after-done", blame="server")


def test_none_chunk_rules() -> None:
    """replyflags.3, reply-type-none.2 (DONE) and reply-type-none.1 (length 0)."""
    result = read_with(w.chunk(1, DATA, data(0, 1024)), w.chunk(1, NONE, b""), w.chunk(1, NONE, b"", DONE))
    fired(result, "bad-reply-chunk.none-without-done")
    result = read_with(w.chunk(1, DATA, data(0, 1024)), w.chunk(1, NONE, b"abcd", DONE))
    assert "length 4" in fired(result, "bad-reply-chunk.none-length")[0].message


def test_content_chunk_lengths() -> None:
    """reply-type-offset-data.1, cmd-read.10, reply-type-offset-hole.1, reply-type-offset-hole.4."""
    r = read_with(w.chunk(1, DATA, struct.pack(">Q", 0), DONE))
    fired(r, "bad-reply-chunk.data-length")
    r = read_with(w.chunk(1, HOLE, hole(0, 1024) + bytes(4), DONE))
    fired(r, "bad-reply-chunk.hole-length")
    result = read_with(w.chunk(1, HOLE, hole(0, 0)), w.chunk(1, DATA, data(0, 1024), DONE))
    fired(result, "bad-reply-chunk.empty-hole")
    assert checks(result) == {"bad-reply-chunk.empty-hole"}


def test_error_chunk_shapes() -> None:
    """reply-type-error.1/.4, reply-type-error-offset.1/.5, reply-type-error.3, message length."""
    r = read_with(w.chunk(1, ERR, struct.pack(">I", 5), DONE))
    fired(r, "bad-reply-chunk.error-length")
    r = read_with(w.chunk(1, ERR_OFF, w.error_payload(5, ""), DONE))
    fired(r, "bad-reply-chunk.error-length")
    result = read_with(w.chunk(1, ERR, w.error_payload(0, "oops"), DONE))
    assert "error value 0" in fired(result, "bad-reply-chunk.error-zero", blame="server")[0].message
    assert checks(result) == {"bad-reply-chunk.error-zero"}
    r = read_with(w.chunk(1, ERR_OFF, w.error_payload(0, "", 0), DONE))
    fired(r, "bad-reply-chunk.error-zero")
    bad_len = struct.pack(">IH", 5, 9) + b"abc"  # says 9 message bytes, carries 3
    r = read_with(w.chunk(1, ERR, bad_len, DONE))
    fired(r, "bad-reply-chunk.message-length")
    r = read_with(w.chunk(1, ERR, w.error_payload(5, "x" * 5000), DONE))
    fired(r, "bad-reply-chunk.message-too-long")


def test_undefined_reply_flag_is_a_hint_only() -> None:
    """replyflags.4 (deferred: may be a hint), replyflags.5: reported once, as info, never as an error."""
    result = read_with(w.chunk(1, DATA, data(0, 512), 2), w.chunk(1, DATA, data(512, 512), DONE | 2))
    hits = fired(result, "bad-reply-chunk.undefined-flag", blame="server")
    assert len(hits) == 1 and hits[0].severity == "info"
    assert all(a.severity == "info" for a in result.anomalies)
    silent(result, "reserved-bits-set")


def test_unknown_and_wrong_chunk_types() -> None:
    """A non-error type the spec does not define; a type not valid for the command."""
    r = read_with(w.chunk(1, 3, b"", 0), w.chunk(1, DATA, data(0, 1024), DONE))
    fired(r, "bad-reply-chunk.unknown-type")
    result = analyze(handshake(TF) + [("c2s", w.request(WRITE, 2, 0, 1, data=b"x")),
                                      ("s2c", w.chunk(2, DATA, data(0, 1), DONE))])
    assert "NBD_CMD_WRITE" in fired(result, "bad-reply-chunk.wrong-type")[0].message
    result = analyze(handshake(TF) + [("c2s", w.request(FLUSH, 2, 0, 0)),
                                      ("s2c", w.chunk(2, ERR_OFF, w.error_payload(5, "", 0), DONE))])
    fired(result, "bad-reply-chunk.wrong-type")


def test_data_chunk_over_max_payload() -> None:
    """reply-type.2: data beyond the advertised maximum payload."""
    script = handshake(TF, block=(512, 4096, 4096)) + [("c2s", w.request(READ, 1, 0, 8192)),
                                                      ("s2c", w.chunk(1, DATA, data(0, 8192), DONE))]
    result = analyze(script)
    assert "8192" in fired(result, "bad-reply-chunk.over-max-payload")[0].message


# ---------------------------------------------------------------- what a reply covers

def test_content_outside_and_overlapping() -> None:
    """reply-type-offset-data.2/.3, reply-type-offset-hole.2/.3, cmd-read.12, cmd-read.13."""
    result = read_with(w.chunk(1, HOLE, hole(8192, 16)), w.chunk(1, DATA, data(4096, 1024), DONE),
                       offset=4096, length=1024)
    assert "outside the request 4096+1024" in fired(result, "bad-reply-chunk.content-outside")[0].message
    result = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, DATA, data(256, 768), DONE))
    fired(result, "bad-reply-chunk.overlap")
    assert checks(result) == {"bad-reply-chunk.overlap"}


def test_content_after_an_error_offset() -> None:
    """cmd-read.23 (content first), reply-type-offset-data.3; cmd-read.may.5: other content may follow."""
    result = read_with(w.chunk(1, ERR_OFF, w.error_payload(5, "bad", 512)), w.chunk(1, DATA, data(0, 1024), DONE))
    fired(result, "bad-reply-chunk.content-after-error")
    ok = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, ERR_OFF, w.error_payload(5, "bad", 100)),
                   w.chunk(1, DATA, data(512, 512), DONE))
    assert ok.anomalies == []


def test_error_offset_rules() -> None:
    """reply-type-error-offset.2/.3/.4; reply-type-error-offset.may.1: several offsets are fine."""
    r = read_with(w.chunk(1, ERR_OFF, w.error_payload(5, "", 5000), DONE))
    fired(r, "bad-reply-chunk.error-offset-outside")
    r = read_with(w.chunk(1, ERR_OFF, w.error_payload(5, "", 8)), w.chunk(1, ERR_OFF, w.error_payload(5, "", 8), DONE))
    fired(r, "bad-reply-chunk.error-offset-repeated")
    result = read_with(w.chunk(1, DATA, data(0, 1024)), w.chunk(1, ERR_OFF, w.error_payload(5, "", 8)),
                       w.chunk(1, ERR_OFF, w.error_payload(5, "", 16), DONE))
    fired(result, "bad-reply-chunk.error-offsets-in-one-chunk")
    ok = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, DATA, data(512, 512)),
                   w.chunk(1, ERR_OFF, w.error_payload(5, "", 8)), w.chunk(1, ERR_OFF, w.error_payload(5, "", 600), DONE))
    assert ok.anomalies == []


def test_generic_error_rules() -> None:
    """reply-type-error.2 (twice), cmd-read.22 and cmd-read.24 (mixed with offsets)."""
    r = read_with(w.chunk(1, ERR, w.error_payload(5, "a")), w.chunk(1, ERR, w.error_payload(5, "b"), DONE))
    fired(r, "bad-reply-chunk.error-repeated")
    r = read_with(w.chunk(1, ERR_OFF, w.error_payload(5, "", 8)), w.chunk(1, ERR, w.error_payload(5, "b"), DONE))
    fired(r, "bad-reply-chunk.mixed-errors")


def test_incomplete_read_and_permitted_splitting() -> None:
    """cmd-read.16; cmd-read.may.2/.may.3: any number of chunks in any order covering the range."""
    result = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, NONE, b"", DONE))
    assert "leaves 512 of 1024" in fired(result, "bad-reply-chunk.incomplete", blame="server")[0].message
    ok = read_with(w.chunk(1, DATA, data(768, 256)), w.chunk(1, HOLE, hole(0, 512)), w.chunk(1, DATA, data(512, 256)),
                   w.chunk(1, NONE, b"", DONE))
    assert ok.anomalies == []
    failed = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, ERR, w.error_payload(5, "io"), DONE))
    assert failed.anomalies == []  # cmd-read.may.7: content may stop after an error


def test_capture_ending_mid_reply_blames_nobody() -> None:
    """A capture (or client) that stops mid-reply is no chunk violation."""
    result = read_with(w.chunk(1, DATA, data(0, 512)))
    silent(result, "bad-reply-chunk")


def test_df_reads() -> None:
    """cmd-read.25, cmd-read.26, cmd-read.27, cmd-read.28; reply-type-offset-data.may.1 without DF."""
    result = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, DATA, data(512, 512), DONE), flags=DF_FLAG)
    fired(result, "bad-reply-chunk.df-fragmented")
    assert checks(result) == {"bad-reply-chunk.df-fragmented"}
    result = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, HOLE, hole(512, 512), DONE), flags=DF_FLAG)
    assert checks(result) == {"bad-reply-chunk.df-data-and-hole"}
    fired(result, "bad-reply-chunk.df-data-and-hole")
    result = read_with(w.chunk(1, ERR, w.error_payload(75, "too big"), DONE), flags=DF_FLAG)
    assert checks(result) == {"bad-reply-chunk.df-overflow-small"}
    fired(result, "bad-reply-chunk.df-overflow-small")
    big = 1 << 20
    result = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, ERR, w.error_payload(75, ""), DONE), flags=DF_FLAG,
                       length=big)
    fired(result, "bad-reply-chunk.overflow-with-content")
    ok = read_with(w.chunk(1, ERR, w.error_payload(75, ""), DONE), flags=DF_FLAG, length=big)
    assert ok.anomalies == []  # cmd-read.may.16
    ok = read_with(w.chunk(1, DATA, data(0, 512)), w.chunk(1, DATA, data(512, 512), DONE))
    assert ok.anomalies == []


# ---------------------------------------------------------------- error values

def fails(cmd: int, error: int, *, offset: int = 0, length: int = 512, flags: int = 0, tflags: int = TF,
          block: tuple[int, int, int] | None = None):  # type: ignore[no-untyped-def]
    payload = bytes(length) if cmd == WRITE else b""
    return analyze(handshake(tflags, block=block) + [("c2s", w.request(cmd, 9, offset, length, flags=flags, data=payload)),
                                                    ("s2c", w.simple_reply(9, error))])


def test_undefined_error_values() -> None:
    """An error outside the list; errors.2: EDQUOT/EFBIG; errors.10: ENOMEM."""
    result = fails(WRITE, 30)
    assert "error 30" in fired(result, "error-value.undefined", blame="server")[0].message
    r = fails(WRITE, 122)
    fired(r, "error-value.unmapped-quota")
    r = fails(READ, 12, tflags=HAS)
    fired(r, "error-value.enomem")


def test_error_value_expectations() -> None:
    """errors.1, errors.3, errors.4, errors.5, errors.6, errors.7, errors.8/.9."""
    end = 1 << 20
    r = fails(WRITE, 5, offset=end - 256)
    fired(r, "error-value.write-beyond-end")
    silent(fails(WRITE, 28, offset=end - 256), "error-value")
    r = fails(TRIM, 5, offset=end - 256)
    fired(r, "error-value.read-beyond-end")
    r = fails(READ, 5, offset=100, tflags=HAS, block=(512, 4096, 1 << 25))
    fired(r, "error-value.unaligned")
    r = fails(WRITE, 5, tflags=HAS | RO)
    fired(r, "error-value.read-only")
    r = fails(WRITE, 75)
    fired(r, "error-value.eoverflow")
    r = fails(TRIM, 95)
    fired(r, "error-value.enotsup")
    r = fails(42, 5)
    fired(r, "error-value.unknown-command")
    r = fails(FLUSH, 5, length=0, flags=1 << 3)
    fired(r, "error-value.bad-flag")
    silent(fails(WZ, 95, flags=1 << 4, tflags=TF | (1 << 11)), "error-value")  # FAST_ZERO refusal
    silent(fails(READ, 75, flags=DF_FLAG, length=1 << 20, tflags=HAS), "error-value")  # DF read too large
    silent(fails(WRITE, 1, tflags=HAS | RO, offset=end - 256), "error-value")  # EPERM fits one of the cases


def test_shutdown() -> None:
    """transmission-end.4 (server keeps ESHUTDOWN), transmission-end.5 (client stops); may.2: early errors ok."""
    script = handshake(TF) + [("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.chunk(1, ERR, w.error_payload(108, ""), DONE)),
                              ("c2s", w.request(READ, 2, 0, 512)), ("s2c", w.chunk(2, ERR, w.error_payload(5, ""), DONE))]
    result = analyze(script)
    fired(result, "disconnect-protocol.request-after-shutdown", blame="client")
    fired(result, "error-value.after-shutdown", blame="server")
    ok = analyze(handshake(TF) + [("c2s", w.request(READ, 1, 0, 512)),
                                  ("s2c", w.chunk(1, ERR, w.error_payload(108, ""), DONE)),
                                  ("c2s", w.request(DISC, 2, 0, 0))])
    assert ok.anomalies == []


def test_requests_after_disc_and_disc_in_flight() -> None:
    """cmd-disc.2 (linked at merge); transmission-end.6."""
    result = analyze(handshake(TF) + [("c2s", w.request(DISC, 1, 0, 0)), ("c2s", w.request(READ, 2, 0, 512)),
                                      ("c2s", w.request(READ, 3, 0, 512))])
    hits = fired(result, "disconnect-protocol.request-after-disc", blame="client")
    assert len(hits) == 1
    result = analyze(handshake(TF) + [("c2s", w.request(READ, 1, 0, 512)), ("c2s", w.request(DISC, 2, 0, 0)),
                                      ("s2c", w.chunk(1, DATA, data(0, 512), DONE))])
    fired(result, "disconnect-protocol.disc-in-flight", blame="client")


def test_zero_length_read() -> None:
    """cmd-read.2."""
    result = analyze(handshake(TF) + [("c2s", w.request(READ, 1, 4096, 0)), ("s2c", w.chunk(1, NONE, b"", DONE))])
    fired(result, "read-request.zero-length", blame="client")


# ---------------------------------------------------------------- block status shape (rows linked at merge)

def test_status_chunk_checks() -> None:
    """Block status chunk shape and contexts: their rows are in the block-status part (j-tls)."""
    bs = 7
    script = handshake(TF) + [
        ("c2s", w.request(bs, 1, 0, 4096)),
        ("s2c", w.chunk(1, 5, w.extents(1, [(4096, 0)]))), ("s2c", w.chunk(1, 5, w.extents(1, [(4096, 0)]), DONE)),
        ("c2s", w.request(bs, 2, 0, 4096)), ("s2c", w.chunk(2, 5, struct.pack(">IH", 1, 0), DONE)),
        ("c2s", w.request(bs, 3, 0, 4096)), ("s2c", w.chunk(3, 6, w.extents_ext(1, [(4096, 0)]), DONE)),
        ("c2s", w.request(bs, 4, 0, 4096)), ("s2c", w.chunk(4, NONE, b"", DONE))]
    result = analyze(script)
    # each is one finding, of the check that owns the statement; none is bad-reply-chunk's
    fired(result, "block-status.duplicate-context", blame="server")
    fired(result, "unaligned-extent.chunk-length", blame="server")
    fired(result, "extended-headers.status-ext-unagreed", blame="server")
    fired(result, "block-status.missing-context", blame="server")
    assert not [a for a in result.anomalies if a.rule == "bad-reply-chunk"]


# ---------------------------------------------------------------- stale reads (rows linked at merge)

def test_stale_read_checks() -> None:
    """stale-read.same-connection and .multi-conn (tflags.8, linked at merge)."""
    new = b"N" * 4096
    same = handshake(HAS | SFLUSH, structured=False) + [
        ("c2s", w.request(WRITE, 1, 0, 4096, data=new)), ("s2c", w.simple_reply(1)),
        ("c2s", w.request(READ, 2, 0, 4096)), ("s2c", w.simple_reply(2, 0, bytes(4096)))]
    hits = fired(analyze(same, keep_data=True), "stale-read.same-connection", blame="server")
    assert hits[0].values["offset"] == 0
    flags = HAS | SFLUSH | (1 << 8)
    writer = handshake(flags, structured=False) + [
        ("c2s", w.request(WRITE, 1, 0, 4096, data=new)), ("s2c", w.simple_reply(1)),
        ("c2s", w.request(FLUSH, 2, 0, 0)), ("s2c", w.simple_reply(2))]
    reader = handshake(flags, structured=False) + [("c2s", w.request(READ, 7, 0, 4096)),
                                                   ("s2c", w.simple_reply(7, 0, bytes(4096)))]
    hits = fired(analyze(writer, reader, keep_data=True), "stale-read.multi-conn", blame="server")
    assert hits[0].session == "s2"
