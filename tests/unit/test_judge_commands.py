"""The commands part of the judge: one firing test per check of the request, command-flag and
transmission-flag rules (each names its requirement rows), and silent tests for what the spec permits."""

from __future__ import annotations

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine, Result
from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations
from tests.wirescripts import handshake

READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZEROES, BSTATUS, RESIZE = range(9)
HAS, RO, SFLUSH, SFUA, STRIM, SWZ, SDF, MULTI = 1, 2, 4, 8, 1 << 5, 1 << 6, 1 << 7, 1 << 8
SCACHE, SFAST = 1 << 10, 1 << 11
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16
EPERM, EIO, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP = 1, 5, 22, 28, 75, 95
ALL = HAS | SFLUSH | SFUA | STRIM | SWZ | MULTI | SCACHE | SFAST  # what nbdkit 1.32 --oldstyle advertises


def checks(result: Result) -> set[str]:
    return {a.check for a in violations(result)}


def ask(cmd: int, cookie: int, offset: int = 0, length: int = 512, flags: int = 0, error: int = 0,
        data: bytes = b"") -> list[tuple[str, bytes]]:
    return [("c2s", w.request(cmd, cookie, offset, length, flags, data)), ("s2c", w.simple_reply(cookie, error))]


def test_disc_and_flush_with_a_range() -> None:
    """cmd-disc.3, cmd-flush.3: both carry offset and length 0."""
    result = analyze(handshake(HAS | SFLUSH) + ask(FLUSH, 1, 4096, 0) + [("c2s", w.request(DISC, 2, 0, 512))])
    hit = fired(result, "request-fields.flush-offset-length", blame="client")
    assert hit[0].values == {"cookie": 1, "offset": 4096, "length": 0}
    assert fired(result, "request-fields.disc-offset-length", blame="client")[0].values["length"] == 512
    assert checks(result) == {"request-fields.flush-offset-length", "request-fields.disc-offset-length"}


def test_zero_length_requests() -> None:
    """cmd-write.2, cmd-trim.1, cmd-write-zeroes.1 (SHOULD NOT: warnings)."""
    result = analyze(handshake(HAS | STRIM | SWZ) + ask(WRITE, 1, 0, 0) + ask(TRIM, 2, 0, 0) + ask(ZEROES, 3, 0, 0))
    for check in (fired(result, "request-fields.write-zero-length", blame="client"),
                  fired(result, "request-fields.trim-zero-length", blame="client"),
                  fired(result, "request-fields.zeroes-zero-length", blame="client")):
        assert check[0].severity == "warning" and "length 0" in check[0].message
    assert len(result.anomalies) == 3


def _closed_by_server(script: list[tuple[str, bytes]]) -> Result:
    engine = Engine()
    engine.feed(it.StreamOpen(conn=0, client=it.Endpoint("127.0.0.1", 40000), server=it.Endpoint("127.0.0.1", 10809),
                              frame=0, time=0, saw_start=True, source="t.pcap"))
    for n, (direction, data) in enumerate(script, 1):
        engine.feed(it.StreamData(conn=0, dir=direction, data=data, frame=n, time=n / 1000))  # type: ignore[arg-type]
    engine.feed(it.StreamClose(conn=0, how="fin", frame=len(script) + 1, time=1.0, by="s2c"))
    return engine.finish()


def test_server_hangs_up_on_empty_requests() -> None:
    """cmd-write.3, cmd-trim.2, cmd-write-zeroes.2: the server should not disconnect."""
    base = handshake(HAS | STRIM | SWZ)
    write = _closed_by_server(base + [("c2s", w.request(WRITE, 7, 0, 0))])
    assert fired(write, "request-fields.write-zero-length-disconnect", blame="server")[0].values["cookie"] == 7
    trim = _closed_by_server(base + [("c2s", w.request(TRIM, 7, 0, 0))])
    fired(trim, "request-fields.trim-zero-length-disconnect", blame="server")
    zeroes = _closed_by_server(base + [("c2s", w.request(ZEROES, 7, 0, 0))])
    fired(zeroes, "request-fields.zeroes-zero-length-disconnect", blame="server")
    # a non-empty request left unanswered is not this check's business
    silent(_closed_by_server(base + [("c2s", w.request(TRIM, 7, 0, 512))]), "request-fields")


def test_cache_flags_and_zeroes_beyond_the_end() -> None:
    """cmd-cache.3 (unknown CACHE flags must be refused), cmd-write-zeroes.16 (ENOSPC past the end)."""
    result = analyze(handshake(HAS | SCACHE | SWZ, size=4096) + ask(CACHE, 1, flags=NO_HOLE)
                     + ask(ZEROES, 2, 4096, 512, error=EINVAL))
    assert fired(result, "request-fields.cache-flags-accepted", blame="server")[0].values["flags"] == NO_HOLE
    assert fired(result, "request-fields.zeroes-beyond-end-not-enospc", blame="server")[0].values["error"] == EINVAL
    ok = analyze(handshake(HAS | SCACHE | SWZ | SFUA, size=4096) + ask(CACHE, 1, flags=FUA) + ask(CACHE, 2, flags=NO_HOLE, error=EINVAL)
                 + ask(ZEROES, 3, 4096, 512, error=ENOSPC))
    silent(ok, "request-fields")


def test_commands_not_advertised() -> None:
    """tflags.2, cmd-flush.2, cmd-trim.4, cmd-write-zeroes.4, baseline.4; cmd-block-status.3 (block-status')."""
    result = analyze(handshake(HAS, contexts=False) + ask(FLUSH, 1, 0, 0) + ask(TRIM, 2) + ask(ZEROES, 3)
                     + ask(RESIZE, 4, 0, 0) + ask(BSTATUS, 5))
    for check in ("flush", "trim", "write-zeroes", "resize"):
        fired(result, f"command-not-advertised.{check}", blame="client")
    fired(result, "command-not-advertised.flush")
    fired(result, "command-not-advertised.trim")
    fired(result, "command-not-advertised.write-zeroes")
    fired(result, "command-not-advertised.resize")
    # one statement, one finding: BLOCK_STATUS without a context is block-status's alone
    fired(result, "block-status.no-context", blame="client")
    assert not [a for a in result.anomalies if a.check.startswith("command-not-advertised.block")]


def test_flags_not_advertised_or_not_documented() -> None:
    """tflags.2/cmdflags.1 (FUA), tflags.7/cmdflags.8 (DF), tflags.12/cmdflags.11 (FAST_ZERO), cmdflags.1."""
    result = analyze(handshake(HAS | SWZ, structured=False) + ask(WRITE, 1, flags=FUA, data=bytes(512))
                     + ask(READ, 2, flags=DF, error=EINVAL) + ask(ZEROES, 3, flags=FAST_ZERO, error=EINVAL)
                     + ask(READ, 4, flags=REQ_ONE, error=EINVAL))
    assert "FUA without" in fired(result, "flag-not-advertised.fua", blame="client")[0].message
    assert "DF without" in fired(result, "flag-not-advertised.df")[0].message
    assert "FAST_ZERO without" in fired(result, "flag-not-advertised.fast-zero")[0].message
    assert "REQ_ONE is not documented for NBD_CMD_READ" in fired(result, "flag-not-advertised.not-for-command")[0].message
    # the server answered the unadvertised FAST_ZERO with EINVAL, as it should: nothing on its side
    assert {a.blame for a in result.anomalies} == {"client"}


def test_fua_on_a_read() -> None:
    """cmdflags.3: FUA on commands that write nothing is a SHOULD NOT (warning)."""
    result = analyze(handshake(HAS | SFUA) + ask(READ, 1, flags=FUA))
    assert fired(result, "flag-not-advertised.fua-non-write", blame="client")[0].severity == "warning"


def test_fua_on_some_writes_and_no_hole_without_trim_are_permitted() -> None:
    """cmdflags.may.1 (FUA on any subset), cmdflags.may.3 (NO_HOLE without SEND_TRIM)."""
    result = analyze(handshake(HAS | SFUA | SWZ) + ask(WRITE, 1, flags=FUA, data=bytes(512)) + ask(WRITE, 2, data=bytes(512))
                     + ask(ZEROES, 3, flags=NO_HOLE))
    assert result.anomalies == []


def test_read_only_export() -> None:
    """tflags.4 (writes must fail), errors.4 and cmd-write-zeroes.17 (NBD_EPERM)."""
    result = analyze(handshake(HAS | RO | STRIM | SWZ) + ask(WRITE, 1, data=bytes(512)) + ask(TRIM, 2, error=EIO)
                     + ask(ZEROES, 3, error=EINVAL) + ask(TRIM, 4, error=EPERM))
    assert fired(result, "write-to-read-only.write-succeeded", blame="server")[0].values["cookie"] == 1
    wrong = fired(result, "error-value.read-only", blame="server")  # the other errors than NBD_EPERM
    assert sorted(a.values["cookie"] for a in wrong) == [2, 3] and {a.severity for a in wrong} == {"warning"}
    assert len(result.anomalies) == 3  # the client's attempt is no fault, and EPERM is right


def test_read_only_refusal_in_an_error_chunk() -> None:
    """errors.4: the error value is read from the error chunk of a structured reply."""
    script = handshake(HAS | RO) + [("c2s", w.request(WRITE, 1, 0, 1, data=b"x")),
                                    ("s2c", w.chunk(1, 0x8001, w.error_payload(EIO, "no"))), ("s2c", w.chunk(1, 0, b"", 1))]
    assert fired(analyze(script), "error-value.read-only")[0].values["error"] == EIO


def test_multi_conn_without_flag() -> None:
    """tflags.9."""
    def conn(cookie: int) -> list[tuple[str, bytes]]:
        return handshake(HAS | SFLUSH) + [("c2s", w.request(WRITE, cookie, 0, 1, data=b"x"))]
    assert fired(analyze(conn(1), conn(2)), "multi-conn-without-flag.multiplexed")[0].values["sessions"] == ["s1", "s2"]


def test_reserved_bits() -> None:
    """cmdflags.1, hflags.3, cflags.4, replyflags.4; transmission bits are only a hazard (info)."""
    script = [("s2c", w.greeting_newstyle(0b111)), ("c2s", w.client_flags(0b1011)),
              ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(4096, 1 | 1 << 15))),
              ("s2c", w.opt_reply(7, 1)), ("c2s", w.request(READ, 1, 0, 512, flags=1 << 9)),
              ("s2c", w.simple_reply(1, 0, bytes(512)))]
    result = analyze(script)
    assert fired(result, "reserved-bits-set.handshake-flags", blame="server")[0].values["value"] == 0b111
    assert fired(result, "reserved-bits-set.client-flags", blame="client")[0].values["value"] == 0b1011
    assert fired(result, "reserved-bits-set.command-flags", blame="client")[0].values["value"] == 1 << 9
    assert fired(result, "reserved-bits-set.transmission-flags", blame="server")[0].severity == "info"
    # reply flags: an undefined bit may be a hint (replyflags.4), so only bad-reply-chunk's info hint
    chunked = handshake(HAS) + [("c2s", w.request(READ, 1, 0, 0)), ("s2c", w.chunk(1, 0, b"", 1 | 1 << 3))]
    assert fired(analyze(chunked), "bad-reply-chunk.undefined-flag", blame="server")[0].severity == "info"


def test_oldstyle_flags() -> None:
    """hflags.5 (upper 16 bits), and the oldstyle transmission flags are now looked at too."""
    result = analyze([("s2c", w.greeting_oldstyle(4096, 1 << 16 | 1 | 1 << 14))])
    fired(result, "reserved-bits-set.oldstyle-flags", blame="server")
    fired(result, "reserved-bits-set.transmission-flags")


def test_transmission_flags_that_contradict_themselves() -> None:
    """tflags.3, tflags.11, tflags.6, ext.tflags.4 (extended-headers')."""
    result = analyze(handshake(SDF | SFAST | 1 << 12, structured=False))
    fired(result, "transmission-flags-invalid.has-flags-clear", blame="server")
    fired(result, "transmission-flags-invalid.fast-zero-without-write-zeroes")
    fired(result, "transmission-flags-invalid.df-without-structured")
    fired(result, "extended-headers.block-status-payload-unagreed")


def test_payload_len_flags() -> None:
    """cmdflags.1 (PAYLOAD_LEN needs extended headers), ext.tflags.6 (payload form needs its flag)."""
    result = analyze(handshake(HAS) + [("c2s", w.request(READ, 1, 0, 512, flags=1 << 5))])
    fired(result, "extended-headers.payload-len-compact", blame="client")
    assert [a.check for a in result.anomalies if a.blame != "capture"] == ["extended-headers.payload-len-compact"]
    ext = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", w.option(11)), ("s2c", w.opt_reply(11, 1)),
           ("c2s", w.option(10, w.opt_meta_data("", ["base:allocation"]))),
           ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))), ("s2c", w.opt_reply(10, 1)),
           ("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, 3, w.info_export(4096, HAS))),
           ("s2c", w.opt_reply(7, 1)),
           ("c2s", w.ext_request(BSTATUS, 1, 0, 12, flags=1 << 5, data=(512).to_bytes(8, "big") + (1).to_bytes(4, "big")))]
    fired(analyze(ext), "extended-headers.payload-form-unadvertised")


def test_unknown_command() -> None:
    """baseline.4: a request type no negotiation can have agreed."""
    result = analyze(handshake(HAS) + ask(42, 1, 0, 0, error=EINVAL))
    assert fired(result, "unknown-command.undefined", blame="client")[0].values["command"] == 42


def test_write_zeroes_error_values() -> None:
    """cmd-write-zeroes.8, .12, .13, .9."""
    fast = handshake(HAS | SWZ | SFAST) + ask(ZEROES, 1, error=ENOTSUP) + ask(ZEROES, 2, flags=FAST_ZERO, error=EOVERFLOW)
    result = analyze(fast)
    assert fired(result, "write-zeroes-error.enotsup-without-fast-zero", blame="server")[0].values["cookie"] == 1
    assert fired(result, "write-zeroes-error.fast-zero-eoverflow")[0].severity == "warning"
    plain = analyze(handshake(HAS | SWZ) + ask(ZEROES, 1, error=ENOTSUP) + ask(ZEROES, 2, flags=FAST_ZERO))
    fired(plain, "write-zeroes-error.enotsup-unadvertised", blame="server")
    assert "answered with success" in fired(plain, "write-zeroes-error.fast-zero-unadvertised-not-einval")[0].message


def test_fast_zero_always_enotsup_is_permitted() -> None:
    """tflags.may.5, cmd-write-zeroes.may.4/.may.5: ENOTSUP to every fast zero is a valid answer."""
    result = analyze(handshake(HAS | SWZ | SFAST) + ask(ZEROES, 1, flags=FAST_ZERO, error=ENOTSUP)
                     + ask(ZEROES, 2, flags=FAST_ZERO, error=ENOTSUP) + ask(ZEROES, 3, flags=FAST_ZERO))
    assert result.anomalies == []


def test_server_refuses_everything_it_advertised() -> None:
    """tflags.1, cmdflags.2, cmdflags.10/cmd-write-zeroes.10: nbdkit 1.32 --oldstyle, as seen on Debian 12."""
    script = [("s2c", w.greeting_oldstyle(1 << 20, ALL))] + ask(WRITE, 1, data=bytes(512)) \
        + ask(WRITE, 2, flags=FUA, data=bytes(512), error=EINVAL) + ask(FLUSH, 3, 0, 0, error=EINVAL) \
        + ask(FLUSH, 4, 0, 0, error=EINVAL) + ask(TRIM, 5, error=EINVAL) + ask(ZEROES, 6, error=EINVAL) \
        + ask(ZEROES, 7, flags=FAST_ZERO, error=EINVAL) + ask(CACHE, 8, error=EINVAL)
    result = analyze(script, server_port=10810)  # oldstyle, so not on the newstyle port (newstyle.3)
    hits = fired(result, "advertised-refused.unsupported-feature", blame="server")
    assert sorted((a.values["command"], a.values["refused"]) for a in hits) == [
        ("NBD_CMD_FLUSH", 2), ("NBD_CMD_TRIM", 1), ("NBD_CMD_WRITE_ZEROES", 1)]
    assert all(a.time > 0 for a in hits)
    fua = fired(result, "advertised-refused.fua-refused")
    assert [a.values["command"] for a in fua] == ["NBD_CMD_WRITE"]
    # CACHE may always fail (cmd-cache.may.3), and the EINVAL to fast zero follows from WRITE_ZEROES refused
    assert checks(result) == {"advertised-refused.unsupported-feature", "advertised-refused.fua-refused"}


def test_fast_zero_refused_with_einval() -> None:
    """cmdflags.10, cmd-write-zeroes.10: a slow zero must fail with ENOTSUP, not EINVAL."""
    result = analyze(handshake(HAS | SWZ | SFAST) + ask(ZEROES, 1) + ask(ZEROES, 2, flags=FAST_ZERO, error=EINVAL))
    assert fired(result, "advertised-refused.fast-zero-wrong-error", blame="server")[0].values["cookie"] == 2


def test_no_hole_refused() -> None:
    """cmdflags.6: advertising WRITE_ZEROES means supporting NO_HOLE."""
    result = analyze(handshake(HAS | SWZ) + ask(ZEROES, 1) + ask(ZEROES, 2, flags=NO_HOLE, error=EINVAL))
    assert fired(result, "advertised-refused.no-hole-refused", blame="server")[0].values["refused"] == 1


def test_refusals_the_request_deserved_are_not_held_against_the_server() -> None:
    """Out of bounds, a flush with a range, an empty trim, a read-only export: EINVAL/EPERM is right."""
    result = analyze(handshake(HAS | SFLUSH | STRIM | SWZ, size=4096) + ask(TRIM, 1, 4096, 512, error=EINVAL)
                     + ask(FLUSH, 2, 0, 512, error=EINVAL) + ask(TRIM, 3, 0, 0, error=EINVAL))
    silent(result, "advertised-refused")
    silent(analyze(handshake(HAS | RO | STRIM) + ask(TRIM, 1, error=EINVAL)), "advertised-refused")


def test_cache_always_failing_is_permitted() -> None:
    """cmd-cache.may.3: SEND_CACHE may be advertised for a CACHE that always fails with EINVAL."""
    result = analyze(handshake(HAS | SCACHE) + ask(CACHE, 1, error=EINVAL) + ask(CACHE, 2, error=EINVAL))
    assert result.anomalies == []


def test_cache_unadvertised_client_hazard() -> None:
    """A hazard: no statement forbids it outright; the spec knows such clients."""
    result = analyze(handshake(HAS | MULTI) + ask(CACHE, 1, error=EINVAL))
    hit = fired(result, "cache-flag-mismatch.cache-unadvertised", blame="client")
    assert hit[0].severity == "warning" and "bit 8" in hit[0].message and hit[0].requirements == ()


def test_cache_misnumbering_needs_writers_relying_on_bit_8() -> None:
    """The qemu 3.0 seed: a hazard only where several connections write relying on bit 8."""
    one = handshake(HAS | MULTI | SFLUSH) + ask(CACHE, 1) + ask(WRITE, 2, data=bytes(512))
    two = handshake(HAS | MULTI | SFLUSH) + [("c2s", w.request(WRITE, 1, 512, 512, data=bytes(512)))]
    result = analyze(one, two)
    hit = fired(result, "cache-flag-mismatch.misnumbered-multi-conn", blame="server")
    assert len(hit) == 1 and hit[0].values["sessions"] == ["s1", "s2"] and hit[0].severity == "warning"


def test_cache_supported_unadvertised_with_multi_conn_is_not_blamed() -> None:
    """A server may support CACHE without bit 10 (spec, bit 10) and truly share its cache: one
    connection, or several that only read, show no hazard on the server's side."""
    alone = analyze(handshake(HAS | MULTI | SFLUSH) + ask(CACHE, 1) + ask(WRITE, 2, data=bytes(512)))
    silent(alone, "cache-flag-mismatch.misnumbered-multi-conn")
    readers = [handshake(HAS | MULTI) + ask(CACHE, 1) + ask(READ, 2) for _ in range(2)]
    silent(analyze(*readers), "cache-flag-mismatch.misnumbered-multi-conn")
