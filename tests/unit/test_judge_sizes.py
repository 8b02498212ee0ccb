"""Checks of size constraints, block status extents and metadata contexts, each against a hand-built
connection breaking one statement (ids of nbdscope/spec/requirements/sizes.toml in each docstring), and
the permitted behaviour they must leave alone."""

from __future__ import annotations

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine, Result
from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations
from tests.wirescripts import handshake

READ, WRITE, TRIM, STATUS = 0, 1, 4, 7
REQ_ONE = 1 << 3
BS, ERR = 5, (1 << 15) | 1
TFLAGS = 0x1 | 0x20


def checks(result: Result) -> set[str]:
    return {a.check for a in violations(result)}


def status(cookie: int, offset: int, length: int, extents: list[tuple[int, int]], ctx: int = 1,
           flags: int = 0) -> list[tuple[str, bytes]]:
    return [("c2s", w.request(STATUS, cookie, offset, length, flags)),
            ("s2c", w.chunk(cookie, BS, w.extents(ctx, extents), flags=1))]


def hangup(script: list[tuple[str, bytes]]) -> Result:
    """The script, then the server closes the connection first (FIN from s2c)."""
    engine = Engine()
    engine.feed(it.StreamOpen(conn=0, client=it.Endpoint("127.0.0.1", 40000), server=it.Endpoint("127.0.0.1", 10809),
                              frame=0, time=0, saw_start=True, source="t.pcap"))
    for frame, (direction, data) in enumerate(script, 1):
        engine.feed(it.StreamData(conn=0, dir=direction, data=data, frame=frame, time=frame / 1000))  # type: ignore[arg-type]
    engine.feed(it.StreamClose(conn=0, how="fin", frame=len(script) + 1, time=1.0, by="s2c"))
    return engine.finish()


BLOCKS = (512, 4096, 1 << 20)

# ------------------------------------------------------------ advertised block sizes


def test_block_size_relations() -> None:
    """sizes.10/.11 (minimum), sizes.13 (preferred), sizes.14 (maximum) of an NBD_INFO_BLOCK_SIZE."""
    r = analyze(handshake(TFLAGS, block=(1000, 256, 128)))
    assert fired(r, "block-size-invalid.minimum", blame="server")[0].values["min_block"] == 1000
    assert fired(r, "block-size-invalid.preferred", blame="server")[0].values["preferred_block"] == 256
    assert fired(r, "block-size-invalid.maximum", blame="server")[0].values["max_payload"] == 128


def test_small_maximum_payload() -> None:
    """sizes.15: a 64 KiB maximum payload on a 1 MiB export (a SHOULD: a warning)."""
    r = analyze(handshake(TFLAGS, block=(512, 4096, 1 << 16)))
    assert fired(r, "block-size-invalid.small-maximum", blame="server")[0].severity == "warning"
    silent(analyze(handshake(TFLAGS, size=1 << 19, block=(512, 4096, 1 << 16))), "block-size-invalid")


def test_export_size_not_block_multiple() -> None:
    """sizes.12: a 1000-byte export with a 512-byte minimum block."""
    r = analyze(handshake(TFLAGS, size=1000, block=(512, 4096, 1 << 20)))
    assert fired(r, "size-not-block-multiple.size")[0].values == {"size": 1000, "min_block": 512}

# ------------------------------------------------------------ requests


def test_unaligned_request_of_a_client_that_asked() -> None:
    """sizes.5, sizes.20 (client), sizes.23 (the server accepted it)."""
    r = analyze(handshake(TFLAGS, block=BLOCKS) + [("c2s", w.request(READ, 1, 1, 100)),
                                                   ("s2c", w.chunk(1, 1, bytes(8) + bytes(100), flags=1))])
    assert fired(r, "unaligned-request.unaligned", blame="client")[0].values["offset"] == 1
    fired(r, "unaligned-request.accepted", blame="server")


def test_block_sizes_sent_unasked_do_not_bind_the_client() -> None:
    """opt-info: the server may send NBD_INFO_BLOCK_SIZE unasked but may not assume the client honours it
    (sizes.may.1 covers INFO); neither alignment nor the advertised maximum is held against the client."""
    script = handshake(TFLAGS, block=None, structured=False)
    script.insert(-1, ("s2c", w.opt_reply(7, 3, w.info_block_size(512, 4096, 4096))))
    r = analyze(script + [("c2s", w.request(READ, 1, 1, 100)), ("s2c", w.simple_reply(1, 0, bytes(100))),
                          ("c2s", w.request(WRITE, 2, 0, 8192, data=bytes(8192))), ("s2c", w.simple_reply(2))])
    silent(r, "unaligned-request", "payload-too-large")


def test_request_beyond_export() -> None:
    """sizes.22 (client), sizes.23 (server success)."""
    r = analyze(handshake(TFLAGS) + [("c2s", w.request(READ, 1, (1 << 20) - 512, 4096)),
                                     ("s2c", w.chunk(1, 1, bytes(8) + bytes(4096), flags=1))])
    assert fired(r, "request-beyond-export.beyond", blame="client")[0].values["size"] == 1 << 20
    fired(r, "request-beyond-export.accepted", blame="server")


def test_payload_over_requested_maximum_and_over_default() -> None:
    """sizes.5, sizes.17 (the asked-for maximum), sizes.7 (32 MiB when none was agreed)."""
    r = analyze(handshake(TFLAGS, block=(512, 4096, 1 << 20)) + [("c2s", w.request(WRITE, 1, 0, 1 << 21))])
    assert fired(r, "payload-too-large.exceeds", blame="client")[0].values["max_payload"] == 1 << 20
    r = analyze(handshake(TFLAGS, size=1 << 30, structured=False) + [("c2s", w.request(READ, 1, 0, 1 << 26))])
    assert fired(r, "payload-too-large.over-default", blame="client")[0].severity == "warning"


def test_effect_length_over_maximum_is_permitted() -> None:
    """sizes.may.10: TRIM may ask for more than the maximum payload."""
    r = analyze(handshake(TFLAGS, block=(512, 4096, 1 << 20)) + [("c2s", w.request(TRIM, 1, 0, 1 << 20 << 0)),
                                                                 ("s2c", w.simple_reply(1))])
    silent(r, "payload-too-large")


def test_server_hangs_up_on_survivable_requests() -> None:
    """sizes.19 (oversized TRIM), sizes.16 (payload <= 32 MiB over the maximum), sizes.9 (unnegotiated sizes)."""
    base = handshake(TFLAGS, block=(512, 4096, 1 << 20))
    r = hangup(base + [("c2s", w.request(TRIM, 1, 0, 1 << 21))])
    fired(r, "payload-too-large.effect-hangup", blame="server")
    r = hangup(base + [("c2s", w.request(WRITE, 1, 0, 1 << 21, data=bytes(1 << 21)))])
    fired(r, "payload-too-large.dos-hangup", blame="server")
    unasked = handshake(TFLAGS, structured=False)
    unasked.insert(-1, ("s2c", w.opt_reply(7, 3, w.info_block_size(512, 4096, 1 << 20))))
    r = hangup(unasked + [("c2s", w.request(READ, 1, 1, 100))])
    fired(r, "payload-too-large.unrequested-hangup", blame="server")

# ------------------------------------------------------------ extents


def test_seed_unaligned_extent() -> None:
    """cmd-block-status.11: the qemu bug of the seed, 1000+24 byte extents on an aligned 1024-byte export."""
    r = analyze(handshake(TFLAGS, size=1024, block=(512, 4096, 1 << 20)) + status(1, 0, 1024, [(1000, 0), (24, 3)]))
    hit = fired(r, "unaligned-extent.length", blame="server")
    assert hit[0].values["length"] == 1000 and hit[0].severity == "warning"
    assert checks(r) == {"unaligned-extent.length"}


def test_unaligned_end_of_an_unaligned_export_is_excepted() -> None:
    """cmd-block-status.11's exception, and a final extent past the export's end (nothing forbids it)."""
    r = analyze(handshake(TFLAGS, size=1000, block=(512, 4096, 1 << 20)) + status(1, 0, 1024, [(512, 0), (488, 1)])
                + status(2, 0, 512, [(1024, 0)]))
    silent(r, "unaligned-extent")


def test_extent_shapes() -> None:
    """reply-type-block-status.3 (zero length), .6 (overshoot), cmd-block-status.8 (same status),
    cmd-block-status.10 (inner extent not a multiple of 512), base-allocation.2 (reserved bits)."""
    r = analyze(handshake(TFLAGS) + status(1, 0, 4096, [(4096, 0), (0, 1)]) + status(2, 0, 8192, [(4096, 0), (4096, 0)])
                + status(3, 0, 8192, [(512, 0), (100, 1), (7580, 0)]) + status(4, 0, 4096, [(4096, 4)]))
    fired(r, "unaligned-extent.zero-length")
    assert fired(r, "unaligned-extent.overshoot")[0].values["length"] == 4096
    fired(r, "unaligned-extent.same-status")
    assert fired(r, "unaligned-extent.not-512")[0].values["length"] == 100
    fired(r, "unaligned-extent.reserved-status")


def test_final_extent_beyond_the_request_is_permitted() -> None:
    """reply-type-block-status.may.1, cmd-block-status.may.3/.4: the last extent may run past the request,
    and a reply may cover less than asked."""
    r = analyze(handshake(TFLAGS) + status(1, 0, 4096, [(65536, 0)]) + status(2, 0, 65536, [(4096, 1)]))
    silent(r, "unaligned-extent", "block-status")


def test_req_one() -> None:
    """reply-type-block-status.4 (one extent), .5 and cmd-block-status.5 (no longer than the request)."""
    r = analyze(handshake(TFLAGS) + status(1, 0, 4096, [(8192, 0)], flags=REQ_ONE)
                + status(2, 0, 8192, [(4096, 0), (4096, 1)], flags=REQ_ONE))
    assert fired(r, "unaligned-extent.req-one-length")[0].values["length"] == 8192
    assert fired(r, "unaligned-extent.req-one-count")[0].values["count"] == 2


def test_chunk_without_extents_and_bad_chunk_length() -> None:
    """reply-type-block-status.1, cmd-block-status.7: no descriptor; a length of 4 + 7."""
    r = analyze(handshake(TFLAGS) + [("c2s", w.request(STATUS, 1, 0, 4096)), ("s2c", w.chunk(1, BS, w.extents(1, []),
                                                                                                flags=1))])
    fired(r, "unaligned-extent.no-extent")
    r = analyze(handshake(TFLAGS) + [("c2s", w.request(STATUS, 1, 0, 4096)),
                                     ("s2c", w.chunk(1, BS, w.extents(1, [(4096, 0)])[:11], flags=1))])
    fired(r, "unaligned-extent.chunk-length")


def test_too_many_extents() -> None:
    """reply-type-block-status.7, cmd-block-status.6: more than 2^20 descriptors."""
    many = [(512, i & 1) for i in range((1 << 20) + 1)]
    r = analyze(handshake(TFLAGS, size=1 << 30) + status(1, 0, 1 << 30, many))
    assert fired(r, "unaligned-extent.too-many")[0].values["count"] == (1 << 20) + 1

# ------------------------------------------------------------ contexts


def test_status_chunk_for_unknown_context() -> None:
    """metadata.2, reply-type-block-status.2, cmd-block-status.4: context 9 was never selected."""
    r = analyze(handshake(TFLAGS) + [("c2s", w.request(STATUS, 1, 0, 4096)),
                                     ("s2c", w.chunk(1, BS, w.extents(1, [(4096, 0)]))),
                                     ("s2c", w.chunk(1, BS, w.extents(9, [(4096, 0)]), flags=1))])
    assert fired(r, "block-status.unknown-context", blame="server")[0].values["context_id"] == 9


def test_duplicate_and_missing_context() -> None:
    """metadata.2, reply-type-block-status.2, cmd-block-status.4: twice context 1; none at all."""
    r = analyze(handshake(TFLAGS) + [("c2s", w.request(STATUS, 1, 0, 4096)),
                                     ("s2c", w.chunk(1, BS, w.extents(1, [(4096, 0)]))),
                                     ("s2c", w.chunk(1, BS, w.extents(1, [(4096, 0)]), flags=1)),
                                     ("c2s", w.request(STATUS, 2, 0, 4096)), ("s2c", w.chunk(2, 0, flags=1))])
    fired(r, "block-status.duplicate-context", blame="server")
    assert fired(r, "block-status.missing-context", blame="server")[0].values["missing"] == [1]


def test_simple_replies_to_block_status() -> None:
    """metadata.5, cmd-block-status.4 (success as a simple reply); cmd-block-status.13 (error, SHOULD)."""
    r = analyze(handshake(TFLAGS) + [("c2s", w.request(STATUS, 1, 0, 4096)), ("s2c", w.simple_reply(1)),
                                     ("c2s", w.request(STATUS, 2, 0, 4096)), ("s2c", w.simple_reply(2, 22))])
    fired(r, "block-status.simple-reply", blame="server")
    assert fired(r, "block-status.simple-error", blame="server")[0].severity == "warning"


def test_block_status_without_negotiation() -> None:
    """metadata.6 (no structured replies); metadata.1/.3, cmd-block-status.3 (no context), metadata.4 (success)."""
    r = analyze(handshake(TFLAGS, structured=False) + [("c2s", w.request(STATUS, 1, 0, 4096)),
                                                       ("s2c", w.simple_reply(1, 22))])
    fired(r, "block-status.no-structured", blame="client")
    r = analyze(handshake(TFLAGS, contexts=False) + [("c2s", w.request(STATUS, 1, 0, 4096)),
                                                     ("s2c", w.chunk(1, BS, w.extents(1, [(4096, 0)]), flags=1))])
    fired(r, "block-status.no-context", blame="client")
    fired(r, "block-status.no-context-accepted", blame="server")


def test_contexts_for_another_export() -> None:
    """metadata.3, cmd-block-status.3: SET_META_CONTEXT named 'a', GO opened ''."""
    script = handshake(TFLAGS, contexts=False)
    script[4:4] = [("c2s", w.option(10, w.opt_meta_data("a", ["base:allocation"]))),
                   ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))), ("s2c", w.opt_reply(10, 1))]
    r = analyze(script + status(1, 0, 4096, [(4096, 0)]))
    assert "'a'" in fired(r, "block-status.other-export", blame="client")[0].message


def test_zero_length_block_status() -> None:
    """cmd-block-status.1 (client SHOULD NOT), cmd-block-status.2 (server SHOULD NOT hang up on it)."""
    r = hangup(handshake(TFLAGS) + [("c2s", w.request(STATUS, 1, 0, 0))])
    fired(r, "block-status.zero-length-request", blame="client")
    fired(r, "block-status.zero-length-hangup", blame="server")


def _set_meta(queries: list[str], names: list[str], reply: int = 1) -> list[tuple[str, bytes]]:
    s = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", w.option(8)), ("s2c", w.opt_reply(8, 1)),
         ("c2s", w.option(10, w.opt_meta_data("", queries)))]
    s += [("s2c", w.opt_reply(10, 4, w.meta_context(n + 1, name))) for n, name in enumerate(names)]
    return s + [("s2c", w.opt_reply(10, reply))]


def test_context_names() -> None:
    """metadata.7 (no namespace), metadata.9 (unregistered namespace)."""
    r = analyze(_set_meta(["acme:dirty", "allocation"], ["acme:dirty", "allocation"]))
    assert fired(r, "block-status.unregistered-namespace", blame="server")[0].values["name"] == "acme:dirty"
    assert fired(r, "block-status.bad-context-name", blame="server")[0].values["name"] == "allocation"
    silent(analyze(_set_meta(["x-mine:a", "qemu:dirty-bitmap:b"], ["x-mine:a", "qemu:dirty-bitmap:b"])),
           "block-status")


def test_wildcards_must_not_select() -> None:
    """base-ns.1 ('base:' selects nothing in SET), metadata.12 (an empty leaf-name should not either)."""
    base = analyze(_set_meta(["base:"], ["base:allocation"]))
    fired(base, "block-status.base-wildcard-selected", blame="server")
    qemu = analyze(_set_meta(["qemu:"], ["qemu:dirty-bitmap:b"]))
    assert fired(qemu, "block-status.empty-leaf-selected", blame="server")[0].severity == "warning"
    silent(analyze(_set_meta(["base:", "base:allocation"], ["base:allocation"])), "block-status")


def test_unknown_base_leaf_is_ignored_not_failed() -> None:
    """base-ns.3: an unknown base: leaf must be ignored, not answered with an error."""
    r = analyze(_set_meta(["base:future"], [], reply=(1 << 31) | 3))
    fired(r, "block-status.base-unknown-leaf-error", blame="server")


def test_permitted_block_sizes() -> None:
    """sizes.may.6 (preferred above the export size), sizes.may.7 (a maximum that is no power of two),
    sizes.may.3 (a client keeping to tighter alignment than asked)."""
    r = analyze(handshake(TFLAGS, block=(512, 1 << 21, 3_000_000)) + [("c2s", w.request(READ, 1, 4096, 4096)),
                                                                      ("s2c", w.chunk(1, 1, bytes(8) + bytes(4096), flags=1))])
    silent(r, "block-size-invalid", "unaligned-request")


def test_status_chunks_in_any_context_order() -> None:
    """cmd-block-status.may.1: chunks for two contexts, in the reverse of the order they were assigned."""
    script = handshake(TFLAGS, contexts=False)
    script[4:4] = [("c2s", w.option(10, w.opt_meta_data("", ["base:allocation", "qemu:dirty-bitmap:b"]))),
                   ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))),
                   ("s2c", w.opt_reply(10, 4, w.meta_context(2, "qemu:dirty-bitmap:b"))), ("s2c", w.opt_reply(10, 1))]
    r = analyze(script + [("c2s", w.request(STATUS, 1, 0, 4096)), ("s2c", w.chunk(1, BS, w.extents(2, [(4096, 1)]))),
                          ("s2c", w.chunk(1, BS, w.extents(1, [(4096, 0)]), flags=1))])
    silent(r, "block-status")
