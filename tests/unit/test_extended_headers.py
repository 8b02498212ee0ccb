"""Extended headers in transmission (rules/extended.py, rule extended-headers): each check fires on a
hand-built session breaking one statement of the extension-ext-header branch (the ext.* rows named in
each test), blaming the peer that broke it, and a correct extended session stays clean.

No Debian 12 peer negotiates extended headers (libnbd 1.14, nbdkit 1.32 and qemu-nbd 7.2 predate
them), so these sessions are wire scripts."""

from __future__ import annotations

import struct

from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations

Script = list[tuple[str, bytes]]
DONE, PAYLOAD_LEN, REQ_ONE = 1, 1 << 5, 1 << 3
READ, WRITE, DISC, FLUSH, TRIM, BLOCK_STATUS = 0, 1, 2, 3, 4, 7
NONE, OFFSET_DATA, OFFSET_HOLE, STATUS, STATUS_EXT, ERROR = 0, 1, 2, 5, 6, (1 << 15) + 1
# HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES and BLOCK_STATUS_PAYLOAD (bit 12)
TFLAGS = 0x1 | 0x4 | 0x8 | 0x20 | 0x40 | 0x1000
# Rules of other helpers that still judge the header style themselves (rules/replies.py, fields.py,
# advertised.py); the lead removes their extended branches when merging, see the j-ext report.
ELSEWHERE: set[str] = set()  # rules that once repeated these findings; none does since the merge


def ext_handshake(tflags: int = TFLAGS, extended: bool = True, structured: bool = False,
                  contexts: bool = True) -> Script:
    """Fixed newstyle to NBD_OPT_GO on "disk": structured replies and extended headers as asked,
    base:allocation as context 1, block sizes 512/4096/32 MiB, a 1 MiB export."""
    s: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]
    if structured:
        s += [("c2s", w.option(8)), ("s2c", w.opt_reply(8, 1))]
    if extended:
        s += [("c2s", w.option(11)), ("s2c", w.opt_reply(11, 1))]
    if contexts:
        s += [("c2s", w.option(10, w.opt_meta_data("disk", ["base:allocation"]))),
              ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))), ("s2c", w.opt_reply(10, 1))]
    return s + [("c2s", w.option(7, w.opt_go_data("disk", (3,)))),
                ("s2c", w.opt_reply(7, 3, w.info_export(1 << 20, tflags))),
                ("s2c", w.opt_reply(7, 3, w.info_block_size(512, 4096, 1 << 25))), ("s2c", w.opt_reply(7, 1))]


def data(offset: int, n: int) -> bytes:
    return struct.pack(">Q", offset) + bytes(n)


CLEAN: Script = [
    ("c2s", w.ext_request(WRITE, 1, 4096, 512, PAYLOAD_LEN, bytes(512))), ("s2c", w.ext_chunk(1, NONE, 4096, flags=DONE)),
    ("c2s", w.ext_request(READ, 2, 4096, 1024)), ("s2c", w.ext_chunk(2, OFFSET_DATA, 4096, data(4096, 512))),
    ("s2c", w.ext_chunk(2, OFFSET_HOLE, 4096, struct.pack(">QI", 4608, 512), flags=DONE)),
    ("c2s", w.ext_request(BLOCK_STATUS, 3, 0, 1 << 20)),
    ("s2c", w.ext_chunk(3, STATUS_EXT, 0, w.extents_ext(1, [(65536, 0), (983040, 3)]), flags=DONE)),
    ("c2s", w.ext_request(BLOCK_STATUS, 4, 0, 12, PAYLOAD_LEN, struct.pack(">QI", 8192, 1))),
    ("s2c", w.ext_chunk(4, STATUS_EXT, 0, w.extents_ext(1, [(8192, 1)]), flags=DONE)),
    ("c2s", w.ext_request(FLUSH, 5, 0, 0)), ("s2c", w.ext_chunk(5, NONE, 0, flags=DONE)),
    ("c2s", w.ext_request(TRIM, 6, 8192, 8192)), ("s2c", w.ext_chunk(6, ERROR, 8192, w.error_payload(1, "no"), flags=DONE)),
    ("c2s", w.ext_request(DISC, 7, 0, 0)),
]


def checks(result) -> set[str]:
    return {a.check or a.rule for a in violations(result)}


def alone(result, hits: list) -> list:
    """``hits`` (what ``fired`` returned), asserting their check is the only one that fired apart from
    the duplicates in ELSEWHERE."""
    check = hits[0].check
    rest = {c for c in checks(result) - {check} if c.split(".")[0] not in ELSEWHERE}
    assert rest == set(), rest
    return hits


def test_a_correct_extended_session_is_clean() -> None:
    """Extended headers agreed, writes with PAYLOAD_LEN, a read split into data and hole chunks (each
    echoing the request offset: ext.ext-reply.3, ext.cmd-read.may.1), BLOCK_STATUS_EXT with and
    without the payload form (ext.cmd-block-status.may.2), an error chunk, DISC: no finding at all."""
    result = analyze(ext_handshake() + CLEAN)
    assert result.anomalies == [], [(a.check or a.rule, a.message) for a in result.anomalies]


def test_structured_replies_first_then_extended_is_clean() -> None:
    """ext.opt-extended-headers.may.1: a client may ask for structured replies before extended headers;
    extended headers then win and extended chunks are right."""
    silent(analyze(ext_handshake(structured=True) + CLEAN), "extended-headers", "extended-negotiation")


# ------------------------------------------------------------ header styles


def test_compact_request_after_extended_headers() -> None:
    """ext.opt-extended-headers.8: only extended requests once extended headers are agreed."""
    result = analyze(ext_handshake() + [("c2s", w.request(FLUSH, 9, 0, 0)), ("s2c", w.ext_chunk(9, NONE, 0, flags=DONE))])
    [hit] = alone(result, fired(result, "extended-headers.compact-request", blame="client"))
    assert "NBD_CMD_FLUSH" in hit.message and "0x9" in hit.message


def test_extended_request_after_a_refusal() -> None:
    """ext.opt-extended-headers.10: a refused NBD_OPT_EXTENDED_HEADERS leaves compact headers."""
    hs = ext_handshake(extended=False, structured=True, tflags=0x6D)
    hs[2:2] = [("c2s", w.option(11)), ("s2c", w.opt_reply(11, (1 << 31) + 1))]  # NBD_REP_ERR_UNSUP
    result = analyze(hs + [("c2s", w.ext_request(FLUSH, 9, 0, 0)), ("s2c", w.simple_reply(9))])
    [hit] = alone(result, fired(result, "extended-headers.extended-request-refused", blame="client"))
    assert "frame 4" in hit.message


def test_payload_len_on_a_compact_request() -> None:
    """ext.request.1: NBD_CMD_FLAG_PAYLOAD_LEN is for extended requests only."""
    result = analyze(ext_handshake(extended=False, structured=True, tflags=0x6D)
                     + [("c2s", w.request(WRITE, 9, 0, 512, PAYLOAD_LEN, bytes(512))), ("s2c", w.simple_reply(9))])
    [hit] = alone(result, fired(result, "extended-headers.payload-len-compact", blame="client"))
    assert hit.values["flags"] == PAYLOAD_LEN


def test_simple_reply_under_extended_headers() -> None:
    """ext.simple-reply.1, ext.ext-reply.1, ext.ext-reply.2, ext.opt-extended-headers.9: no simple
    reply, even without payload, once extended headers are agreed."""
    result = analyze(ext_handshake() + [("c2s", w.ext_request(FLUSH, 9, 0, 0)), ("s2c", w.simple_reply(9))])
    [hit] = alone(result, fired(result, "extended-headers.simple-reply", blame="server"))
    assert "NBD_CMD_FLUSH" in hit.message and hit.values["cookie"] == 9


def test_structured_chunk_under_extended_headers() -> None:
    """ext.ext-reply.1, ext.opt-extended-headers.9, ext.reply-type-block-status-ext.6: 20-byte chunks
    are wrong under extended headers, and the chunk's type is not judged on top."""
    result = analyze(ext_handshake() + [("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 4096)),
                                        ("s2c", w.chunk(9, STATUS, w.extents(1, [(4096, 0)]), flags=DONE))])
    [hit] = alone(result, fired(result, "extended-headers.structured-chunk", blame="server"))
    assert "0x9" in hit.message
    silent(result, "extended-headers.status-32-under-extended")


def test_extended_read_reply_without_extended_headers() -> None:
    """ext.cmd-read.2, ext.cmd-read.3: a read reply uses the magic of what was agreed."""
    result = analyze(ext_handshake(extended=False, structured=True, tflags=0x6D)
                     + [("c2s", w.request(READ, 9, 0, 512)), ("s2c", w.ext_chunk(9, OFFSET_DATA, 0, data(0, 512), DONE))])
    [hit] = alone(result, fired(result, "extended-headers.extended-reply-unagreed", blame="server"))
    assert "only structured replies" in hit.message


def test_offset_field_differs_from_the_request() -> None:
    """ext.ext-reply.3, ext.ext-reply.5: the extended chunk's offset is the request's offset."""
    result = analyze(ext_handshake() + [("c2s", w.ext_request(READ, 9, 4096, 512)),
                                        ("s2c", w.ext_chunk(9, OFFSET_DATA, 0, data(4096, 512), DONE))])
    [hit] = alone(result, fired(result, "extended-headers.offset-mismatch", blame="server"))
    assert hit.values["offset"] == 0 and hit.values["request_offset"] == 4096


# ------------------------------------------------------------ requests


def test_extended_write_without_payload_len() -> None:
    """ext.request.2, ext.cmdflags.1, ext.opt-extended-headers.8: extended writes set PAYLOAD_LEN."""
    result = analyze(ext_handshake() + [("c2s", w.ext_request(WRITE, 9, 0, 512, 0, bytes(512))),
                                        ("s2c", w.ext_chunk(9, NONE, 0, flags=DONE))])
    [hit] = alone(result, fired(result, "extended-headers.write-without-payload-len", blame="client"))
    assert hit.values["length"] == 512


def test_read_longer_than_32_bits() -> None:
    """ext.reply-type-offset-hole.1: portable clients keep read lengths within 32 bits."""
    result = analyze(ext_handshake() + [("c2s", w.ext_request(READ, 9, 0, 1 << 33)),
                                        ("s2c", w.ext_chunk(9, ERROR, 0, w.error_payload(75, "too big"), DONE))])
    hits = fired(result, "extended-headers.read-over-32-bits", blame="client")
    assert hits[0].values["length"] == 1 << 33


def test_payload_form_without_the_flag() -> None:
    """ext.tflags.6: the payload form only when NBD_FLAG_BLOCK_STATUS_PAYLOAD is advertised."""
    result = analyze(ext_handshake(tflags=0x6D) + [
        ("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 12, PAYLOAD_LEN, struct.pack(">QI", 4096, 1))),
        ("s2c", w.ext_chunk(9, ERROR, 0, w.error_payload(22, ""), DONE))])
    [hit] = alone(result, fired(result, "extended-headers.payload-form-unadvertised", blame="client"))
    assert "0x9" in hit.message


def test_payload_form_of_the_wrong_size() -> None:
    """ext.cmd-block-status.5: the payload is 8 + 4n bytes."""
    result = analyze(ext_handshake() + [
        ("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 10, PAYLOAD_LEN, struct.pack(">QH", 4096, 1))),
        ("s2c", w.ext_chunk(9, ERROR, 0, w.error_payload(22, ""), DONE))])
    [hit] = alone(result, fired(result, "extended-headers.payload-form-size", blame="client"))
    assert hit.values["payload_length"] == 10


def test_payload_form_asking_about_nothing() -> None:
    """ext.cmd-block-status.1: no status length of 0, here the payload form's effect length."""
    result = analyze(ext_handshake() + [
        ("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 12, PAYLOAD_LEN, struct.pack(">QI", 0, 1))),
        ("s2c", w.ext_chunk(9, ERROR, 0, w.error_payload(22, ""), DONE))])
    alone(result, fired(result, "extended-headers.payload-form-zero-length", blame="client"))


def test_payload_form_with_unknown_ids_succeeds() -> None:
    """ext.cmd-block-status.4: repeated or unnegotiated context ids must fail with NBD_EINVAL."""
    result = analyze(ext_handshake() + [
        ("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 16, PAYLOAD_LEN, struct.pack(">QII", 4096, 1, 9))),
        ("s2c", w.ext_chunk(9, STATUS_EXT, 0, w.extents_ext(1, [(4096, 0)]), flags=DONE))])
    [hit] = alone(result, fired(result, "extended-headers.payload-form-bad-ids-accepted", blame="server"))
    assert "[9] never negotiated" in hit.message


def test_payload_form_with_repeated_ids_failed_is_right() -> None:
    """ext.cmd-block-status.4: failing such a request is what the server must do."""
    result = analyze(ext_handshake() + [
        ("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 16, PAYLOAD_LEN, struct.pack(">QII", 4096, 1, 1))),
        ("s2c", w.ext_chunk(9, ERROR, 0, w.error_payload(22, "repeated id"), DONE))])
    silent(result, "extended-headers")


# ------------------------------------------------------------ block status chunks


def _status(payload: bytes, rtype: int = STATUS_EXT, **hs: object) -> Script:
    return ext_handshake(**hs) + [("c2s", w.ext_request(BLOCK_STATUS, 9, 0, 4096)),  # type: ignore[arg-type]
                                  ("s2c", w.ext_chunk(9, rtype, 0, payload, flags=DONE))]


def test_32_bit_status_chunk_under_extended_headers() -> None:
    """ext.reply-type-block-status.1, ext.cmd-block-status.3."""
    result = analyze(_status(w.extents(1, [(4096, 0)]), rtype=STATUS))
    alone(result, fired(result, "extended-headers.status-32-under-extended", blame="server"))


def test_64_bit_status_chunk_without_extended_headers() -> None:
    """ext.reply-type-block-status-ext.2, ext.cmd-block-status.3."""
    script = ext_handshake(extended=False, structured=True, tflags=0x6D) + [
        ("c2s", w.request(BLOCK_STATUS, 9, 0, 4096)), ("s2c", w.chunk(9, STATUS_EXT, w.extents_ext(1, [(4096, 0)]), DONE))]
    result = analyze(script)
    alone(result, fired(result, "extended-headers.status-ext-unagreed", blame="server"))


def test_status_ext_length_not_a_whole_descriptor() -> None:
    """ext.reply-type-block-status-ext.1: 8 bytes plus whole 16-byte descriptors."""
    result = analyze(_status(w.extents_ext(1, [(4096, 0)]) + bytes(4)))
    [hit] = alone(result, fired(result, "extended-headers.status-ext-length", blame="server"))
    assert hit.values["length"] == 28


def test_status_ext_count_disagrees_with_length() -> None:
    """ext.reply-type-block-status-ext.3, ext.reply-type-block-status-ext.4."""
    payload = struct.pack(">IIQQ", 1, 2, 4096, 0)
    result = analyze(_status(payload))
    [hit] = alone(result, fired(result, "extended-headers.status-ext-count", blame="server"))
    assert hit.values["descriptor_count"] == 2
    zero = struct.pack(">IIQQ", 1, 0, 4096, 0)
    assert fired(analyze(_status(zero)), "extended-headers.status-ext-count")[0].values["descriptor_count"] == 0


def test_status_ext_high_bits_for_base_allocation() -> None:
    """ext.reply-type-block-status-ext.7: base: contexts leave the upper 32 status bits zero."""
    result = analyze(_status(w.extents_ext(1, [(4096, 1 << 32 | 1)])))
    [hit] = alone(result, fired(result, "extended-headers.status-ext-high-bits", blame="server"))
    assert "base:allocation" in hit.message and hit.values["status"] == 1 << 32 | 1
    silent(analyze(_status(w.extents_ext(1, [(4096, 1 << 31 | 1)]))), "extended-headers.status-ext-high-bits")


# ------------------------------------------------------------ NBD_FLAG_BLOCK_STATUS_PAYLOAD


def test_block_status_payload_flag_without_extended_headers() -> None:
    """ext.tflags.4 (while ext.cmd-block-status.may.2 lets an extended server set it: the clean test)."""
    result = analyze(ext_handshake(extended=False, structured=True) + [("c2s", w.request(DISC, 1, 0, 0))])
    [hit] = alone(result, fired(result, "extended-headers.block-status-payload-unagreed", blame="server"))
    assert hit.values["transmission_flags"] == TFLAGS


def test_block_status_payload_flag_without_contexts() -> None:
    """ext.tflags.5: not advertised to a client that selected no metadata context."""
    result = analyze(ext_handshake(contexts=False) + [("c2s", w.ext_request(DISC, 1, 0, 0))])
    alone(result, fired(result, "extended-headers.block-status-payload-no-contexts", blame="server"))
