"""Firing and silence tests of option-protocol, one violation per script, each naming the requirement
rows (nbdscope/spec/requirements/handshake.toml) it shows broken or honoured.

Numbers are typed from the spec here (as in tests/nbdwire.py), not imported from nbdscope.spec."""

from __future__ import annotations

import struct

from nbdscope.analysis.engine import Result
from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations

EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, SR, LIST_META, SET_META, EXT = 1, 2, 3, 5, 6, 7, 8, 9, 10, 11
ACK, SERVER, REP_INFO, META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN, ERR_SHUTDOWN, ERR_BLOCK_SIZE_REQD, ERR_TOO_BIG = (
    ERR + 1, ERR + 3, ERR + 6, ERR + 7, ERR + 8, ERR + 9)
INFO_EXPORT, INFO_NAME, INFO_BLOCK_SIZE = 0, 1, 3
TF = 0x1 | 0x4  # HAS_FLAGS | SEND_FLUSH
READ = 0

Script = list[tuple[str, bytes]]
GREET: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]
SR_AGREED: Script = [("c2s", w.option(SR)), ("s2c", w.opt_reply(SR, ACK))]


def go(name: str = "", infos: tuple[int, ...] = ()) -> Script:
    return [("c2s", w.option(GO, w.opt_go_data(name, infos))),
            ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK))]


def checks(result: Result) -> set[str]:
    return {a.check or a.rule for a in violations(result)}


def only_fired(check: str, blame: str, script: Script) -> list:
    """The script breaks exactly one statement: ``check`` fires, blaming ``blame``, and nothing else does."""
    result = analyze(script)
    hits = fired(result, check, blame=blame)
    assert checks(result) == {check}, [(a.check, a.message) for a in violations(result)]
    return hits


# ------------------------------------------------------------ greeting and flags

def test_oldstyle_greeting_on_the_newstyle_port() -> None:
    """newstyle.3: oldstyle on 10809 is advised against (a warning); newstyle.may.1 lets servers use other ports."""
    result = analyze([("s2c", w.greeting_oldstyle(1 << 20, TF))])
    hits = fired(result, "option-protocol.oldstyle-on-newstyle-port", blame="server")
    assert hits[0].severity == "warning" and "10809" in hits[0].message


def test_a_server_that_keeps_going_after_undefined_client_flags() -> None:
    """newstyle.6 / cflags.5: the server must drop a client that set undefined bits (the bits themselves are
    reserved-bits-set's)."""
    kept = analyze([("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(0b111)), *go()])
    assert len(fired(kept, "option-protocol.kept-bad-client-flags", blame="server")) == 1
    assert checks(kept) == {"option-protocol.kept-bad-client-flags", "reserved-bits-set.client-flags"}
    dropped = analyze([("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(0b111)),
                       ("c2s", w.option(GO, w.opt_go_data("")))])
    silent(dropped, "option-protocol")


def test_no_zeroes_asked_but_not_offered() -> None:
    """cflags.2: C_NO_ZEROES only when the server offered NO_ZEROES."""
    only_fired("option-protocol.no-zeroes-not-offered", "client", [("s2c", w.greeting_newstyle(0b01)), ("c2s", w.client_flags(0b11))])


def test_client_without_fixed_newstyle_flag_and_a_server_that_honours_it() -> None:
    """fixed-newstyle.1 / cflags.1 (a warning); cflags.may.1: the server may treat it as fixed anyway."""
    result = analyze([("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(0)), *go()])
    [hit] = fired(result, "option-protocol.no-fixed-newstyle-flag", blame="client")
    assert hit.severity == "warning"
    silent(result, "option-protocol.kept-bad-client-flags", "option-protocol.replies-without-fixed-newstyle")
    assert checks(result) == {"option-protocol.no-fixed-newstyle-flag"}


def test_option_replies_without_fixed_newstyle() -> None:
    """opt-export-name.2: a server answering options must offer fixed newstyle."""
    script = [("s2c", w.greeting_newstyle(0b10)), ("c2s", w.client_flags(0b10)), *go()]
    only_fired("option-protocol.replies-without-fixed-newstyle", "server", script)


def _export_name(hflags: int, cflags: int, reply: bytes) -> Script:
    return [("s2c", w.greeting_newstyle(hflags)), ("c2s", w.client_flags(cflags)),
            ("c2s", w.option(EXPORT_NAME, b"disk")), ("s2c", reply),
            ("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512)))]


def test_zero_padding_despite_no_zeroes() -> None:
    """hflags.2 / cflags.3: with both NO_ZEROES flags the 124 zeroes are left out; the stream stays framed."""
    size_flags = struct.pack(">QH", 1 << 20, TF)
    only_fired("option-protocol.zeroes-despite-no-zeroes", "server", _export_name(0b11, 0b11, size_flags + bytes(124)))
    silent(analyze(_export_name(0b11, 0b11, size_flags)), "option-protocol", "malformed-message")


def test_zero_padding_missing() -> None:
    """hflags.4: without C_NO_ZEROES the server keeps the padding (a SHOULD NOT: a warning)."""
    size_flags = struct.pack(">QH", 1 << 20, TF)
    [hit] = only_fired("option-protocol.zeroes-missing", "server", _export_name(0b01, 0b01, size_flags))
    assert hit.severity == "warning"
    silent(analyze(_export_name(0b01, 0b01, size_flags + bytes(124))), "option-protocol", "malformed-message")


# ------------------------------------------------------------ options out of turn

def test_option_before_the_previous_reply() -> None:
    """fixed-newstyle.2: the GO goes out while LIST awaits its replies; the server, answering in order, is fine."""
    script = [*GREET, ("c2s", w.option(LIST)), ("c2s", w.option(GO, w.opt_go_data(""))),
              ("s2c", w.opt_reply(LIST, SERVER, struct.pack(">I", 4) + b"disk")), ("s2c", w.opt_reply(LIST, ACK)),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK))]
    [hit] = only_fired("option-protocol.option-before-reply", "client", script)
    assert "NBD_OPT_LIST (frame 3)" in hit.message


def test_abort_may_interrupt_a_pending_option() -> None:
    """haggle-end.may.2: a soft disconnect whenever the client wishes is not option-before-reply."""
    script = [*GREET, ("c2s", w.option(LIST)), ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(LIST, ACK)),
              ("s2c", w.opt_reply(ABORT, ACK))]
    silent(analyze(script), "option-protocol")


def test_option_after_go_and_after_export_name() -> None:
    """opt-info.16: no option after a successful GO; after NBD_OPT_EXPORT_NAME it is no request either."""
    only_fired("option-protocol.option-after-handshake", "client", [*GREET, *go(), ("c2s", w.option(LIST))])
    size_flags = struct.pack(">QH", 1 << 20, TF)
    only_fired("option-protocol.option-after-export-name", "client", [*GREET, ("c2s", w.option(EXPORT_NAME, b"")), ("s2c", size_flags), ("c2s", w.option(LIST))])


def test_option_after_abort() -> None:
    """haggle-end.1: after NBD_OPT_ABORT the client drops the connection."""
    script = [*GREET, ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK)), *go()]
    only_fired("option-protocol.option-after-abort", "client", script)


def test_option_after_shutdown() -> None:
    """haggle-end.10: NBD_REP_ERR_SHUTDOWN is answered with NBD_OPT_ABORT."""
    first = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))), ("s2c", w.opt_reply(GO, ERR_SHUTDOWN))]
    only_fired("option-protocol.option-after-shutdown", "client", [*first, *go()])
    silent(analyze([*first, ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))]), "option-protocol")


def test_structured_replies_asked_twice() -> None:
    """fixed-newstyle.3 (a warning); fixed-newstyle.may.3 lets the server fail the repeat with ERR_INVALID."""
    script = [*GREET, *SR_AGREED, ("c2s", w.option(SR)), ("s2c", w.opt_reply(SR, ERR_INVALID))]
    [hit] = only_fired("option-protocol.repeated-structured-reply", "client", script)
    assert hit.severity == "warning" and "frame 4" in hit.message


# ------------------------------------------------------------ data where none belongs

def test_data_on_list_rejected_and_served() -> None:
    """opt-list.1 (the client); opt-list.2: serving it anyway is the server's warning."""
    ask = [*GREET, ("c2s", w.option(LIST, b"junk"))]
    only_fired("option-protocol.data-on-list", "client", [*ask, ("s2c", w.opt_reply(LIST, ERR_INVALID))])
    served = analyze([*ask, ("s2c", w.opt_reply(LIST, ACK))])
    [hit] = fired(served, "option-protocol.list-data-not-rejected", blame="server")
    assert hit.severity == "warning" and checks(served) == {"option-protocol.data-on-list",
                                                              "option-protocol.list-data-not-rejected"}


def test_data_on_structured_reply_rejected_and_acknowledged() -> None:
    """opt-structured-reply.1 (the client); opt-structured-reply.2 (the server should reject it)."""
    ask = [*GREET, ("c2s", w.option(SR, b"junk"))]
    only_fired("option-protocol.data-on-structured-reply", "client", [*ask, ("s2c", w.opt_reply(SR, ERR_INVALID))])
    acked = analyze([*ask, ("s2c", w.opt_reply(SR, ACK))])
    fired(acked, "option-protocol.structured-reply-data-not-rejected", blame="server")


def test_data_on_abort_is_a_warning_and_the_server_must_still_ack() -> None:
    """opt-abort.2 is a SHOULD NOT: a warning, never an error; opt-abort.1 / opt-abort.3: the server acks anyway."""
    result = analyze([*GREET, ("c2s", w.option(ABORT, b"junk")), ("s2c", w.opt_reply(ABORT, ACK))])
    [hit] = fired(result, "option-protocol.data-on-abort", blame="client")
    assert hit.severity == "warning"
    assert not [a for a in result.anomalies if a.severity == "error"]
    refused = analyze([*GREET, ("c2s", w.option(ABORT, b"junk")), ("s2c", w.opt_reply(ABORT, ERR_INVALID))])
    [hit] = fired(refused, "option-protocol.abort-not-acked", blame="server")
    assert "NBD_REP_ERR_INVALID" in hit.message
    only_fired("option-protocol.abort-not-acked", "server", [*GREET, ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ERR_UNSUP))])


def test_data_on_starttls_and_extended_headers() -> None:
    """opt-starttls.1 and ext.opt-extended-headers.1: judged by tls-protocol and extended-negotiation, once each."""
    only_fired("tls-protocol.starttls-data", "client", [*GREET, ("c2s", w.option(STARTTLS, b"x")), ("s2c", w.opt_reply(STARTTLS, ERR_INVALID))])
    only_fired("extended-negotiation.option-data", "client", [*GREET, ("c2s", w.option(EXT, b"x")), ("s2c", w.opt_reply(EXT, ERR_INVALID))])


# ------------------------------------------------------------ request payloads

def test_info_name_longer_than_the_option() -> None:
    """opt-info.1: the name length is at most the option length less 6."""
    data = struct.pack(">I", 50) + b"disk" + struct.pack(">H", 0)
    [hit] = only_fired("option-protocol.info-name-too-long", "client", [*GREET, ("c2s", w.option(GO, data)), ("s2c", w.opt_reply(GO, ERR_INVALID))])
    assert "50" in hit.message


def test_meta_context_request_malformed_and_acknowledged() -> None:
    """request-malformed (the format); opt-list-meta-context.3: the server must fail it with ERR_INVALID."""
    data = struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 99) + b"base:allocation"
    ask = [*GREET, *SR_AGREED, ("c2s", w.option(SET_META, data))]
    [hit] = only_fired("option-protocol.request-malformed", "client", [*ask, ("s2c", w.opt_reply(SET_META, ERR_INVALID))])
    assert "99" in hit.message
    acked = analyze([*ask, ("s2c", w.opt_reply(SET_META, ACK))])
    fired(acked, "option-protocol.meta-request-not-rejected", blame="server")


def test_duplicate_info_request() -> None:
    """opt-info.2: each NBD_INFO type is requested once."""
    script = [*GREET, ("c2s", w.option(GO, w.opt_go_data("", (3, 3)))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_block_size(512, 4096, 1 << 25))), ("s2c", w.opt_reply(GO, ACK))]
    [hit] = only_fired("option-protocol.duplicate-info-request", "client", script)
    assert "NBD_INFO_BLOCK_SIZE" in hit.message


def test_meta_context_options_before_structured_replies() -> None:
    """opt-set-meta-context.1 / opt-structured-reply.6 (error), opt-list-meta-context.1 (warning);
    opt-set-meta-context.2: serving the SET anyway is the server's warning; opt-list-meta-context.may.1 lets
    the server refuse the LIST with ERR_INVALID."""
    set_ask = [*GREET, ("c2s", w.option(SET_META, w.opt_meta_data("", ["base:allocation"])))]
    only_fired("option-protocol.set-meta-context-before-structured", "client", [*set_ask, ("s2c", w.opt_reply(SET_META, ERR_INVALID))])
    served = analyze([*set_ask, ("s2c", w.opt_reply(SET_META, META, w.meta_context(1, "base:allocation"))),
                      ("s2c", w.opt_reply(SET_META, ACK))])
    [hit] = fired(served, "option-protocol.set-meta-context-not-rejected", blame="server")
    assert hit.severity == "warning"
    listed = [*GREET, ("c2s", w.option(LIST_META, w.opt_meta_data("", []))), ("s2c", w.opt_reply(LIST_META, ERR_INVALID))]
    [hit] = only_fired("option-protocol.list-meta-context-before-structured", "client", listed)
    assert hit.severity == "warning"


def test_queries_without_namespace() -> None:
    """opt-list-meta-context.2 and opt-set-meta-context.4: a query starts with 'namespace:'."""
    def ask(opt: int) -> Script:
        return [*GREET, *SR_AGREED, ("c2s", w.option(opt, w.opt_meta_data("", ["allocation"]))),
                ("s2c", w.opt_reply(opt, ACK))]
    [hit] = only_fired("option-protocol.list-query-without-namespace", "client", ask(LIST_META))
    assert "'allocation'" in hit.message
    [hit] = only_fired("option-protocol.set-query-without-namespace", "client", ask(SET_META))
    assert "'allocation'" in hit.message


# ------------------------------------------------------------ strings

def test_strings_with_nul_and_over_the_limits() -> None:
    """conventions.5 (NUL), conventions.7 (> 4096 bytes: an error only), conventions.6 (> 256: a warning)."""
    def ask(name: str) -> Script:
        return [*GREET, ("c2s", w.option(GO, w.opt_go_data(name))), ("s2c", w.opt_reply(GO, ERR_UNKNOWN))]
    [hit] = only_fired("option-protocol.string-has-nul", "client", ask("dis\x00k"))
    assert "index 3" in hit.message
    [hit] = only_fired("option-protocol.string-too-long", "client", ask("d" * 5000))
    assert "5000" in hit.message and hit.severity == "error"
    [hit] = only_fired("option-protocol.string-long", "client", ask("d" * 300))
    assert hit.severity == "warning"
    silent(analyze(ask("d" * 256)), "option-protocol")
    message = [*GREET, ("c2s", w.option(GO, w.opt_go_data("x"))), ("s2c", w.opt_reply(GO, ERR_UNKNOWN, b"no\x00pe"))]
    only_fired("option-protocol.string-has-nul", "server", message)


def test_context_names() -> None:
    """rep-meta-context.1 (valid UTF-8) and opt-list-meta-context.11 (listed contexts start with 'namespace:')."""
    bad = struct.pack(">I", 1) + b"base:\xff"
    script = [*GREET, *SR_AGREED, ("c2s", w.option(SET_META, w.opt_meta_data("", ["base:allocation"]))),
              ("s2c", w.opt_reply(SET_META, META, bad)), ("s2c", w.opt_reply(SET_META, ACK))]
    only_fired("option-protocol.context-name-not-utf8", "server", script)
    script = [*GREET, *SR_AGREED, ("c2s", w.option(LIST_META, w.opt_meta_data("", []))),
              ("s2c", w.opt_reply(LIST_META, META, w.meta_context(0, "allocation"))), ("s2c", w.opt_reply(LIST_META, ACK))]
    only_fired("block-status.bad-context-name", "server", script)


# ------------------------------------------------------------ replies

def test_reply_nobody_asked_for() -> None:
    """reply-to-unasked (the fixed-newstyle reply format): one final reply per option."""
    [hit] = only_fired("option-protocol.reply-to-unasked", "server", [*GREET, ("s2c", w.opt_reply(SR, ACK))])
    assert "NBD_OPT_STRUCTURED_REPLY" in hit.message


def test_reply_naming_another_option_blames_only_the_server() -> None:
    """reply-wrong-option (the reply echoes the client's option); the client's next option is not out of turn."""
    script = [*GREET, ("c2s", w.option(LIST)), ("s2c", w.opt_reply(INFO, ACK)),
              ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))]
    [hit] = only_fired("option-protocol.reply-wrong-option", "server", script)
    assert "NBD_OPT_INFO" in hit.message and "NBD_OPT_LIST (frame 3)" in hit.message


def test_option_reply_to_export_name() -> None:
    """newstyle.7 / opt-export-name.1: refusing NBD_OPT_EXPORT_NAME means closing, not an option reply."""
    script = [*GREET, ("c2s", w.option(EXPORT_NAME, b"nope")), ("s2c", w.opt_reply(EXPORT_NAME, ERR_UNKNOWN))]
    [hit] = only_fired("option-protocol.reply-to-export-name", "server", script)
    assert "NBD_REP_ERR_UNKNOWN" in hit.message


def test_reply_payloads_that_contradict_their_length() -> None:
    """reply-malformed (ACK has no data), rep-server.1, rep-info.6/.7 (type present), rep-info.5 (12), rep-info.9
    (14); rep-meta-context.may.1: an error reply may carry a message."""
    ack_data = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))),
                ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK, b"1234"))]
    only_fired("option-protocol.reply-malformed", "server", ack_data)
    server = [*GREET, ("c2s", w.option(LIST)), ("s2c", w.opt_reply(LIST, SERVER, struct.pack(">I", 40) + b"disk")),
              ("s2c", w.opt_reply(LIST, ACK))]
    only_fired("option-protocol.server-name-too-long", "server", server)

    def go_with(info: bytes) -> Script:
        return [*GREET, ("c2s", w.option(GO, w.opt_go_data("", (3,)))), ("s2c", w.opt_reply(GO, REP_INFO, info)),
                ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK))]
    only_fired("option-protocol.info-too-short", "server", go_with(b"\x00"))
    only_fired("option-protocol.info-block-size-length", "server", go_with(w.info_block_size(512, 4096, 1 << 25)[:10]))
    long_export = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))),
                   ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF) + b"\x00")), ("s2c", w.opt_reply(GO, ACK))]
    only_fired("option-protocol.info-export-length", "server", long_export)
    explained = [*GREET, ("c2s", w.option(GO, w.opt_go_data("x"))), ("s2c", w.opt_reply(GO, ERR_UNKNOWN, b"no x"))]
    silent(analyze(explained), "option-protocol")


def test_go_acknowledged_without_export_info() -> None:
    """opt-info.6 / rep-info.1: NBD_INFO_EXPORT before the ACK."""
    script = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))), ("s2c", w.opt_reply(GO, ACK))]
    only_fired("option-protocol.go-without-export-info", "server", script)


def test_info_type_twice_and_what_the_server_may_do() -> None:
    """rep-info.2 (a warning); opt-info.may.7 / opt-info.may.8: requested items may be left out (other than
    NBD_INFO_EXPORT) and unrequested ones sent."""
    script = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK))]
    [hit] = only_fired("option-protocol.duplicate-info-reply", "server", script)
    assert hit.severity == "warning" and "frame 4" in hit.message
    liberal = [*GREET, ("c2s", w.option(GO, w.opt_go_data("", (3,)))),
               ("s2c", w.opt_reply(GO, REP_INFO, struct.pack(">H", INFO_NAME) + b"disk")),
               ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK))]
    silent(analyze(liberal), "option-protocol")


def test_go_differs_from_the_info_before_it_but_may_reorder() -> None:
    """opt-info.14; opt-info.may.11: the NBD_REP_INFO order may differ."""
    blocks = w.info_block_size(512, 4096, 1 << 25)
    info = [*GREET, ("c2s", w.option(INFO, w.opt_go_data("d", (3,)))),
            ("s2c", w.opt_reply(INFO, REP_INFO, w.info_export(0, TF))), ("s2c", w.opt_reply(INFO, REP_INFO, blocks)),
            ("s2c", w.opt_reply(INFO, ACK)), ("c2s", w.option(GO, w.opt_go_data("d", (3,)))),
            ("s2c", w.opt_reply(GO, REP_INFO, blocks))]
    [hit] = only_fired("option-protocol.go-differs-from-info", "server", [*info, ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(4096, TF))), ("s2c", w.opt_reply(GO, ACK))])
    assert "size 0 vs 4096" in hit.message
    silent(analyze([*info, ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(0, TF))), ("s2c", w.opt_reply(GO, ACK))]),
           "option-protocol")


def test_block_sizes_that_cannot_be() -> None:
    """sizes.11 and the size constraints: judged by block-size-invalid alone."""
    script = [*GREET, ("c2s", w.option(GO, w.opt_go_data("", (3,)))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1000 * 4096, TF))),  # a multiple of 1000
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_block_size(1000, 4096, 1 << 25))), ("s2c", w.opt_reply(GO, ACK))]
    [hit] = only_fired("block-size-invalid.minimum", "server", script)
    assert "1000" in hit.message


def _meta(opt: int, queries: list[str], *replies: bytes) -> Script:
    return [*GREET, *SR_AGREED, ("c2s", w.option(opt, w.opt_meta_data("", queries))),
            *[("s2c", w.opt_reply(opt, META, r)) for r in replies], ("s2c", w.opt_reply(opt, ACK))]


def test_context_ids_bind_only_for_set_meta_context() -> None:
    """opt-set-meta-context.6: one id per selected context; a LIST answer's ids are reserved (qemu-nbd lists
    several contexts with id 0), so repeated ids there are silent."""
    qs = ["base:allocation", "qemu:dirty-bitmap:b"]
    [hit] = only_fired("option-protocol.context-id-reused", "server", _meta(SET_META, qs, w.meta_context(1, qs[0]), w.meta_context(1, qs[1])))
    assert "context id 1" in hit.message
    silent(analyze(_meta(LIST_META, [], w.meta_context(0, qs[0]), w.meta_context(0, qs[1]),
                         w.meta_context(0, "qemu:allocation-depth"))), "option-protocol")
    silent(analyze(_meta(SET_META, qs, w.meta_context(1, qs[0]), w.meta_context(2, qs[1]))), "option-protocol")


def test_list_context_id_other_than_zero() -> None:
    """opt-list-meta-context.12: list replies carry id 0 (a SHOULD: a warning, once per session)."""
    [hit] = only_fired("option-protocol.list-context-id-nonzero", "server", _meta(LIST_META, [], w.meta_context(5, "base:allocation"), w.meta_context(6, "qemu:x")))
    assert hit.severity == "warning"


def test_contexts_selected_for_no_queries() -> None:
    """opt-set-meta-context.5: an empty query list selects nothing."""
    only_fired("option-protocol.contexts-for-no-queries", "server", _meta(SET_META, [], w.meta_context(1, "base:allocation")))
    silent(analyze(_meta(SET_META, [])), "option-protocol")


def test_list_meta_context_answered_with_another_reply_type() -> None:
    """opt-list-meta-context.6: only NBD_REP_META_CONTEXT before the final reply."""
    script = [*GREET, *SR_AGREED, ("c2s", w.option(LIST_META, w.opt_meta_data("", []))),
              ("s2c", w.opt_reply(LIST_META, SERVER, struct.pack(">I", 4) + b"disk")), ("s2c", w.opt_reply(LIST_META, ACK))]
    only_fired("option-protocol.context-reply-type", "server", script)


def test_too_big_only_when_queries_were_sent() -> None:
    """opt-list-meta-context.9 (a warning); opt-list-meta-context.may.4: with queries ERR_TOO_BIG is allowed."""
    def ask(queries: list[str]) -> Script:
        return [*GREET, *SR_AGREED, ("c2s", w.option(LIST_META, w.opt_meta_data("", queries))),
                ("s2c", w.opt_reply(LIST_META, ERR_TOO_BIG))]
    [hit] = only_fired("option-protocol.too-big-for-no-queries", "server", ask([]))
    assert hit.severity == "warning"
    silent(analyze(ask(["base:"])), "option-protocol")


def test_info_then_unknown_export() -> None:
    """opt-info.7: no NBD_REP_INFO for an export then reported unknown (a warning)."""
    script = [*GREET, ("c2s", w.option(GO, w.opt_go_data("x"))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ERR_UNKNOWN))]
    only_fired("option-protocol.info-before-unknown", "server", script)


def test_block_size_required() -> None:
    """opt-info.9: never when the client asked for NBD_INFO_BLOCK_SIZE; opt-info.11: send the sizes first."""
    blocks = ("s2c", w.opt_reply(GO, REP_INFO, w.info_block_size(512, 4096, 1 << 25)))
    asked = [*GREET, ("c2s", w.option(GO, w.opt_go_data("", (3,)))), blocks, ("s2c", w.opt_reply(GO, ERR_BLOCK_SIZE_REQD))]
    only_fired("option-protocol.block-size-reqd-despite-request", "server", asked)
    unasked = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))), ("s2c", w.opt_reply(GO, ERR_BLOCK_SIZE_REQD))]
    [hit] = only_fired("option-protocol.block-size-reqd-without-info", "server", unasked)
    assert hit.severity == "warning"
    helped = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))), blocks, ("s2c", w.opt_reply(GO, ERR_BLOCK_SIZE_REQD))]
    silent(analyze(helped), "option-protocol")


# ------------------------------------------------------------ nbdscope's own limits

def _many_queries(n: int, size: int) -> bytes:
    """A meta context payload for the default export with ``n`` queries of ``size`` bytes (built in one join:
    nbdwire's encoder appends, which is slow at this size)."""
    parts = [struct.pack(">II", 0, n)]
    for i in range(n):
        q = f"x-test:{i:08d}".ljust(size, "q").encode()
        parts += [struct.pack(">I", len(q)), q]
    return b"".join(parts)


def test_a_large_legal_set_meta_context_decodes_and_is_not_flagged() -> None:
    """No limit on an option's length in the spec: 5000 queries of 250 bytes (1.27 MB) are legal."""
    data = _many_queries(5000, 250)
    assert len(data) > 1_200_000
    result = analyze([*GREET, *SR_AGREED, ("c2s", w.option(SET_META, data)), ("s2c", w.opt_reply(SET_META, ACK)),
                      *go()])
    silent(result, "option-protocol", "malformed-message")
    assert checks(result) == set()


def test_a_payload_beyond_what_nbdscope_holds_is_a_note_about_nbdscope() -> None:
    """payload-not-held: never a peer's fault (no requirement row; blame nbdscope, severity info)."""
    data = _many_queries(70000, 250)
    assert len(data) > 16 << 20
    result = analyze([*GREET, *SR_AGREED, ("c2s", w.option(LIST_META, data)), ("s2c", w.opt_reply(LIST_META, ACK))])
    [hit] = fired(result, "option-protocol.payload-not-held", blame="nbdscope")
    assert hit.severity == "info" and str(len(data)) in hit.message
    assert checks(result) == {"option-protocol.payload-not-held"}


def test_zero_padding_after_go() -> None:
    """opt-info.15: no padding after the GO's ACK, NO_ZEROES or not; the stream stays framed."""
    script = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))),
              ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK) + bytes(124)),
              ("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512)))]
    [hit] = only_fired("option-protocol.padding-after-go", "server", script)
    assert "124" in hit.message
    silent(analyze([*GREET, *go(), ("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512)))]),
           "option-protocol", "malformed-message")


def test_no_fallback_after_go_unsupported() -> None:
    """opt-export-name.4 / opt-info.13 (warnings): after ERR_UNSUP to GO the client tries NBD_OPT_EXPORT_NAME."""
    unsup = [*GREET, ("c2s", w.option(GO, w.opt_go_data(""))), ("s2c", w.opt_reply(GO, ERR_UNSUP))]
    [hit] = only_fired("option-protocol.no-fallback-to-export-name", "client",
                       [*unsup, ("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))])
    assert hit.severity == "warning" and "frame 4" in hit.message
    size_flags = struct.pack(">QH", 1 << 20, TF)  # NO_ZEROES agreed in GREET
    silent(analyze([*unsup, ("c2s", w.option(EXPORT_NAME, b"")), ("s2c", size_flags)]), "option-protocol")


def test_a_capture_that_began_mid_handshake_does_not_guess_what_was_agreed() -> None:
    """set-meta-context-before-structured needs the whole handshake: structured replies may have been agreed
    before the capture began (opt-set-meta-context.1 is not shown broken)."""
    from nbdscope import vocab as it
    from nbdscope.analysis.engine import Engine
    engine = Engine()
    engine.feed(it.StreamOpen(conn=0, client=it.Endpoint("127.0.0.1", 40000), server=it.Endpoint("127.0.0.1", 10809),
                              frame=0, time=0, saw_start=False, source="t.pcap"))
    late = [("c2s", w.option(SET_META, w.opt_meta_data("", ["base:allocation"]))),
            ("s2c", w.opt_reply(SET_META, META, w.meta_context(1, "base:allocation"))),
            ("s2c", w.opt_reply(SET_META, ACK)), *go()]
    for frame, (d, data) in enumerate(late, 1):
        engine.feed(it.StreamData(conn=0, dir=d, data=data, frame=frame, time=frame / 1000))  # type: ignore[arg-type]
    result = engine.finish()
    silent(result, "option-protocol")
    assert result.sessions and result.sessions[0].transmission
