"""tls-protocol's checks, each against a hand-built connection that breaks one TLS statement of the spec
(ids of nbdscope/spec/requirements/tls.toml in each docstring), and the permitted behaviour it must not flag."""

from __future__ import annotations

import struct

from tests import nbdwire as w
from tests.judging import analyze, fired, silent, violations

STARTTLS, GO, INFO, LIST, ABORT, EXPORT_NAME, STRUCTURED = 5, 7, 6, 3, 2, 1, 8
ACK, SERVER, REP_INFO = 1, 2, 3
ERR_POLICY, ERR_INVALID, ERR_TLS_REQD = (1 << 31) | 2, (1 << 31) | 3, (1 << 31) | 5
CLIENT_HELLO = b"\x16\x03\x01\x00\x10\x01\x00\x00\x0c\x03\x03" + bytes(10)
SERVER_HELLO_12 = b"\x16\x03\x03\x00\x10\x02\x00\x00\x0c\x03\x03" + bytes(10)


def opening(client_flags: int = 0b11) -> list[tuple[str, bytes]]:
    return [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(client_flags))]


def served(name: str = "") -> list[tuple[str, bytes]]:
    """GO for ``name`` answered with the export's size and an ACK."""
    return [("c2s", w.option(GO, w.opt_go_data(name))), ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, 1))),
            ("s2c", w.opt_reply(GO, ACK))]


def refused(option: int, data: bytes = b"", reply: int = ERR_TLS_REQD) -> list[tuple[str, bytes]]:
    return [("c2s", w.option(option, data)), ("s2c", w.opt_reply(option, reply))]


def export_name(name: str = "") -> list[tuple[str, bytes]]:
    n = name.encode()
    return [("c2s", w.option(EXPORT_NAME, n)), ("s2c", struct.pack(">QH", 1 << 20, 1) + bytes(124))]


def checks(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {a.check for a in violations(result)}


def test_client_plaintext_after_ack() -> None:
    """tls-client.4: after NBD_REP_ACK the client must switch to TLS; it sent an option instead."""
    r = analyze(opening() + refused(STARTTLS, reply=ACK) + [("c2s", w.option(GO, w.opt_go_data("")))])
    hit = fired(r, "tls-protocol.client-plaintext-after-ack", blame="client")
    assert "IHAVEOPT" in hit[0].message and checks(r) == {"tls-protocol.client-plaintext-after-ack"}


def test_options_pipelined_behind_starttls() -> None:
    """tls-client.4 and tls-client.3: options (a second STARTTLS among them) sent behind the acknowledged one."""
    r = analyze(opening() + [("c2s", w.option(STARTTLS)), ("c2s", w.option(STARTTLS)),
                             ("c2s", w.option(LIST)), ("s2c", w.opt_reply(STARTTLS, ACK)), ("c2s", CLIENT_HELLO)])
    assert fired(r, "tls-protocol.starttls-twice", blame="client")[0].frame == 4
    assert fired(r, "tls-protocol.client-plaintext-after-ack", blame="client")[0].frame == 5


def test_server_plaintext_after_ack() -> None:
    """forcedtls.3, forcedtls.4: the server acknowledged STARTTLS and went on with plaintext option replies."""
    r = analyze(opening() + refused(STARTTLS, reply=ACK) + [("c2s", CLIENT_HELLO), ("s2c", w.opt_reply(GO, ACK))])
    hit = fired(r, "tls-protocol.server-plaintext-after-ack", blame="server")
    assert "option reply" in hit[0].message and checks(r) == {"tls-protocol.server-plaintext-after-ack"}


def test_a_real_tls_upgrade_is_silent_whoever_starts_the_handshake() -> None:
    """forcedtls.may.1: either side may begin the TLS handshake; TLS records after the ACK are fine."""
    r = analyze(opening() + refused(STARTTLS, reply=ACK) + [("s2c", SERVER_HELLO_12), ("c2s", CLIENT_HELLO)])
    silent(r, "tls-protocol")


def test_starttls_reply_neither_ack_nor_error() -> None:
    """opt-starttls.2, notls.1: STARTTLS answered with NBD_REP_SERVER."""
    r = analyze(opening() + [("c2s", w.option(STARTTLS)), ("s2c", w.opt_reply(STARTTLS, SERVER, b"\0\0\0\0")),
                             ("s2c", w.opt_reply(STARTTLS, ERR_POLICY))])
    hit = fired(r, "tls-protocol.starttls-reply", blame="server")
    assert hit[0].values["reply"] == "NBD_REP_SERVER"


def test_starttls_with_data() -> None:
    """opt-starttls.1: the client must send STARTTLS without data."""
    r = analyze(opening() + refused(STARTTLS, b"abcd", ERR_INVALID))
    assert fired(r, "tls-protocol.starttls-data", blame="client")[0].values["length"] == 4


def test_starttls_without_fixed_newstyle() -> None:
    """tls-client.2 (client) and tls-server.4 (server): TLS needs fixed newstyle on both sides."""
    r = analyze(opening(client_flags=0b10) + refused(STARTTLS, reply=ACK))
    fired(r, "tls-protocol.starttls-without-fixed-newstyle", blame="client")
    fired(r, "tls-protocol.tls-without-fixed-newstyle", blame="server")


def test_tls_required_by_a_notls_server() -> None:
    """notls.2, tls-server.2: STARTTLS refused (NOTLS), then TLS_REQD."""
    r = analyze(opening() + refused(STARTTLS, reply=ERR_POLICY) + refused(GO, w.opt_go_data("")))
    hit = fired(r, "tls-protocol.tls-reqd-from-notls", blame="server")
    assert hit[0].values["refused_frame"] == 4 and checks(r) == {"tls-protocol.tls-reqd-from-notls"}


def test_starttls_refused_after_tls_was_required() -> None:
    """forcedtls.1, selectivetls.1: a server that requires TLS must acknowledge STARTTLS."""
    r = analyze(opening() + refused(GO, w.opt_go_data("secret")) + refused(STARTTLS, reply=ERR_POLICY))
    fired(r, "tls-protocol.starttls-refused", blame="server")


def test_forced_server_answers_another_option() -> None:
    """forcedtls.6, selectivetls.6, tls-server.2: TLS_REQD to STRUCTURED_REPLY, then LIST answered."""
    r = analyze(opening() + refused(STRUCTURED) + [("c2s", w.option(LIST)),
                                                   ("s2c", w.opt_reply(LIST, SERVER, b"\0\0\0\0")),
                                                   ("s2c", w.opt_reply(LIST, ACK))])
    hit = fired(r, "tls-protocol.forced-answered", blame="server")
    assert len(hit) == 1 and hit[0].values["required_frame"] == 4


def test_forced_after_an_answer() -> None:
    """forcedtls.6: the other order, an answered LIST first, then TLS_REQD to STRUCTURED_REPLY."""
    r = analyze(opening() + [("c2s", w.option(LIST)), ("s2c", w.opt_reply(LIST, ACK))] + refused(STRUCTURED))
    assert fired(r, "tls-protocol.forced-answered", blame="server")[0].values["answered_frame"] == 4


def test_forced_server_serves_go_in_plaintext() -> None:
    """forcedtls.8: a FORCEDTLS server must answer a plaintext GO with TLS_REQD."""
    r = analyze(opening() + refused(STRUCTURED) + served())
    fired(r, "tls-protocol.forced-go-answered", blame="server")
    assert checks(r) == {"tls-protocol.forced-go-answered"}


def test_forced_server_serves_export_name_in_plaintext() -> None:
    """forcedtls.7: a FORCEDTLS server must hang up on a plaintext EXPORT_NAME."""
    r = analyze(opening() + refused(STRUCTURED) + export_name())
    fired(r, "tls-protocol.forced-export-name-served", blame="server")


def test_tls_only_export_served_by_go() -> None:
    """selectivetls.3: the export that drew TLS_REQD is then served in plaintext."""
    r = analyze(opening() + refused(GO, w.opt_go_data("secret")) + served("secret"))
    hit = fired(r, "tls-protocol.tls-only-go-served", blame="server")
    assert hit[0].values["export"] == "secret" and checks(r) == {"tls-protocol.tls-only-go-served"}


def test_tls_only_export_served_by_export_name() -> None:
    """selectivetls.4: INFO for 'secret' drew TLS_REQD; a plaintext EXPORT_NAME of it must be hung up on."""
    r = analyze(opening() + refused(INFO, w.opt_go_data("secret")) + export_name("secret"))
    fired(r, "tls-protocol.tls-only-export-name-served", blame="server")


def test_selective_server_serves_another_export_in_plaintext() -> None:
    """tls-server.may.1, selectivetls.may.1, tls-client.may.7: TLS_REQD for 'secret', then 'public' served in
    plaintext is SELECTIVETLS working as meant; the client may carry on without TLS."""
    r = analyze(opening() + refused(INFO, w.opt_go_data("secret")) + refused(GO, w.opt_go_data("secret"))
                + served("public"))
    silent(r, "tls-protocol")


def test_client_keeps_haggling_after_tls_required() -> None:
    """tls-client.may.3/.7: after TLS_REQD the client may go on in plaintext (libnbd's INFO, GO, ABORT)."""
    r = analyze(opening() + refused(STRUCTURED) + refused(INFO, w.opt_go_data("")) + refused(GO, w.opt_go_data(""))
                + [("c2s", w.option(ABORT)), ("s2c", w.opt_reply(ABORT, ACK))])
    silent(r, "tls-protocol")


def test_stateful_option_before_starttls() -> None:
    """opt-starttls.4: structured replies negotiated before STARTTLS are lost by the upgrade."""
    r = analyze(opening() + refused(STRUCTURED, reply=ACK) + refused(STARTTLS, reply=ACK))
    hit = fired(r, "tls-protocol.stateful-before-starttls", blame="client")
    assert hit[0].severity == "warning" and hit[0].values["option"] == "NBD_OPT_STRUCTURED_REPLY"


def test_export_name_by_tls_capable_client() -> None:
    """tls-client.9: a client that offered STARTTLS should enter with GO, not EXPORT_NAME."""
    r = analyze(opening() + refused(STARTTLS, reply=ERR_POLICY) + export_name())
    assert fired(r, "tls-protocol.export-name-with-tls-client", blame="client")[0].severity == "warning"


def test_export_name_after_a_failed_go_is_silent() -> None:
    """tls-client.9 says GO 'if the server supports it': a client that tried GO may fall back."""
    r = analyze(opening() + refused(STARTTLS, reply=ERR_POLICY) + refused(GO, w.opt_go_data(""), (1 << 31) | 1)
                + export_name())
    silent(r, "tls-protocol")


def test_old_tls_version_selected() -> None:
    """tls-versions.5: the ServerHello picks TLS 1.0."""
    hello = b"\x16\x03\x01\x00\x10\x02\x00\x00\x0c\x03\x01" + bytes(10)
    r = analyze(opening() + refused(STARTTLS, reply=ACK) + [("c2s", CLIENT_HELLO), ("s2c", hello)])
    assert fired(r, "tls-protocol.old-tls-version", blame="server")[0].values["version"] == 0x0301


def test_tls_before_ack() -> None:
    """No STARTTLS at all, yet a TLS record where an option was due (a hazard: breaks the option framing)."""
    r = analyze(opening() + [("c2s", CLIENT_HELLO)])
    fired(r, "tls-protocol.tls-before-ack", blame="client")


def test_tls_after_refusal() -> None:
    """tls-client.5: STARTTLS refused, so the client must carry on in plaintext or hang up, not start TLS."""
    r = analyze(opening() + refused(STARTTLS, reply=ERR_POLICY) + [("c2s", CLIENT_HELLO)])
    hit = fired(r, "tls-protocol.tls-after-refusal", blame="client")
    assert "frame 4" in hit[0].message
