"""Negotiating extended headers (rules/extended_negotiation.py, rule extended-negotiation): each check
fires on a handshake breaking one ext.* statement of NBD_OPT_EXTENDED_HEADERS or of
NBD_REP_ERR_EXT_HEADER_REQD, and what the branch permits stays silent."""

from __future__ import annotations

from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations

Script = list[tuple[str, bytes]]
ACK, META_CONTEXT = 1, 4
ERR_UNSUP, ERR_INVALID, ERR_BLOCK_SIZE_REQD, ERR_EXT_HEADER_REQD = ((1 << 31) + n for n in (1, 3, 8, 10))
EXPORT_NAME, GO, STRUCTURED, LIST_META, SET_META, EXTENDED = 1, 7, 8, 9, 10, 11
TFLAGS = 0x1 | 0x4 | 0x8  # HAS_FLAGS, SEND_FLUSH, SEND_FUA


def start() -> Script:
    return [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]


def ask(option: int, *replies: tuple[int, bytes], data: bytes = b"") -> Script:
    return [("c2s", w.option(option, data)), *(("s2c", w.opt_reply(option, rep, d)) for rep, d in replies)]


def go(name: str = "disk") -> Script:
    return ask(GO, (3, w.info_export(1 << 20, TFLAGS)), (ACK, b""), data=w.opt_go_data(name))


def rules(result) -> set[str]:
    return {a.check or a.rule for a in violations(result)}


def test_extended_headers_then_go_is_clean() -> None:
    result = analyze(start() + ask(EXTENDED, (ACK, b"")) + go() + [("c2s", w.ext_request(2, 1, 0, 0))])
    assert result.anomalies == [], [(a.check or a.rule, a.message) for a in result.anomalies]


def test_option_with_data() -> None:
    """ext.opt-extended-headers.1: NBD_OPT_EXTENDED_HEADERS carries no data (refused as the server should)."""
    result = analyze(start() + ask(EXTENDED, (ERR_INVALID, b""), data=b"\0\0\0\0") + go())
    [hit] = fired(result, "extended-negotiation.option-data", blame="client")
    assert hit.values["length"] == 4
    assert rules(result) <= {"extended-negotiation.option-data", "option-protocol"}  # its payload problem, j-handshake


def test_option_with_data_acknowledged() -> None:
    """ext.opt-extended-headers.2: the server should refuse it with NBD_REP_ERR_INVALID, not acknowledge it."""
    result = analyze(start() + ask(EXTENDED, (ACK, b""), data=b"\0\0") + go())
    [hit] = fired(result, "extended-negotiation.option-data-accepted", blame="server")
    assert "2 bytes" in hit.message


def test_go_unsupported_after_extended_headers() -> None:
    """ext.opt-extended-headers.3, ext.opt-info.1: NBD_OPT_GO must work once extended headers are agreed."""
    result = analyze(start() + ask(EXTENDED, (ACK, b"")) + ask(GO, (ERR_UNSUP, b""), data=w.opt_go_data("disk")))
    [hit] = fired(result, "extended-negotiation.go-unsupported", blame="server")
    assert hit.values["acknowledged_frame"] == 4
    assert rules(result) == {"extended-negotiation.go-unsupported"}


def test_go_block_size_required_is_permitted() -> None:
    """ext.opt-extended-headers.may.2: a GO without NBD_INFO_BLOCK_SIZE may fail with BLOCK_SIZE_REQD."""
    result = analyze(start() + ask(EXTENDED, (ACK, b"")) + ask(GO, (ERR_BLOCK_SIZE_REQD, b""),
                                                                data=w.opt_go_data("disk")))
    silent(result, "extended-negotiation")


def test_extended_headers_only_after_structured_replies() -> None:
    """ext.opt-extended-headers.4: refused alone, accepted once structured replies were agreed."""
    script = start() + ask(EXTENDED, (ERR_UNSUP, b"")) + ask(STRUCTURED, (ACK, b"")) + ask(EXTENDED, (ACK, b"")) + go()
    [hit] = fired(analyze(script), "extended-negotiation.needs-structured-first", blame="server")
    assert hit.values["refused_frame"] == 4


def test_refused_by_a_server_without_extended_headers_is_fine() -> None:
    """A server that lacks extended headers refuses them whatever came first: nothing to flag."""
    script = start() + ask(EXTENDED, (ERR_UNSUP, b"")) + ask(STRUCTURED, (ACK, b"")) + go()
    silent(analyze(script), "extended-negotiation", "extended-headers")


def test_export_name_after_extended_headers() -> None:
    """ext.opt-extended-headers.5, ext.opt-export-name.3: no NBD_OPT_EXPORT_NAME after the ACK."""
    script = start() + ask(EXTENDED, (ACK, b"")) + [("c2s", w.option(EXPORT_NAME, b"disk"))]
    [hit] = fired(analyze(script), "extended-negotiation.export-name-after-extended", blame="client")
    assert "frame 4" in hit.message


def test_export_name_after_refused_extended_headers_is_fine() -> None:
    """ext.opt-extended-headers.5 binds only once the option was acknowledged."""
    script = start() + ask(EXTENDED, (ERR_UNSUP, b"")) + [("c2s", w.option(EXPORT_NAME, b"disk"))]
    silent(analyze(script), "extended-negotiation")


def test_list_ext_header_reqd_after_extended_headers() -> None:
    """ext.opt-list-meta-context.3: not once the client has extended headers."""
    script = start() + ask(EXTENDED, (ACK, b"")) + ask(LIST_META, (ERR_EXT_HEADER_REQD, b""),
                                                       data=w.opt_meta_data("disk", ["qemu:"]))
    [hit] = fired(analyze(script), "extended-negotiation.list-ext-header-reqd", blame="server")
    assert "acknowledged in frame 4" in hit.message


def test_list_ext_header_reqd_for_base_only() -> None:
    """ext.opt-list-meta-context.3: never for a listing limited to base:."""
    script = start() + ask(STRUCTURED, (ACK, b"")) + ask(
        LIST_META, (META_CONTEXT, w.meta_context(0, "base:allocation")), (ERR_EXT_HEADER_REQD, b""),
        data=w.opt_meta_data("disk", ["base:"]))
    [hit] = fired(analyze(script), "extended-negotiation.list-ext-header-reqd", blame="server")
    assert "['base:']" in hit.message


def test_list_ext_header_reqd_before_any_negotiation_is_permitted() -> None:
    """ext.opt-list-meta-context.may.1: listing before structured replies may be refused so."""
    script = start() + ask(LIST_META, (ERR_EXT_HEADER_REQD, b""), data=w.opt_meta_data("disk", ["base:"]))
    silent(analyze(script), "extended-negotiation")


def test_list_ext_header_reqd_beyond_base_is_permitted() -> None:
    """ext.opt-list-meta-context.may.3: 64-bit contexts may be listed, then EXT_HEADER_REQD ends the list."""
    script = start() + ask(STRUCTURED, (ACK, b"")) + ask(
        LIST_META, (META_CONTEXT, w.meta_context(0, "x-wide:status")), (ERR_EXT_HEADER_REQD, b""),
        data=w.opt_meta_data("disk", []))
    silent(analyze(script), "extended-negotiation")


def test_set_ext_header_reqd_for_base_only() -> None:
    """ext.opt-set-meta-context.4: base: contexts never need extended headers."""
    script = start() + ask(STRUCTURED, (ACK, b"")) + ask(SET_META, (ERR_EXT_HEADER_REQD, b""),
                                                         data=w.opt_meta_data("disk", ["base:allocation"]))
    [hit] = fired(analyze(script), "extended-negotiation.set-ext-header-reqd", blame="server")
    assert "base:allocation" in hit.message


def test_set_ext_header_reqd_before_any_negotiation_is_permitted() -> None:
    """ext.opt-set-meta-context.2: before structured replies a server should answer INVALID or EXT_HEADER_REQD."""
    script = start() + ask(SET_META, (ERR_EXT_HEADER_REQD, b""), data=w.opt_meta_data("disk", ["base:allocation"]))
    silent(analyze(script), "extended-negotiation")


def test_go_requiring_extended_headers() -> None:
    """ext.interop.1: servers wanting older clients do not refuse GO with EXT_HEADER_REQD."""
    script = start() + ask(STRUCTURED, (ACK, b"")) + ask(GO, (ERR_EXT_HEADER_REQD, b""), data=w.opt_go_data("disk"))
    [hit] = fired(analyze(script), "extended-negotiation.go-requires-extended", blame="server")
    assert hit.severity == "warning"
