"""Rules on decrypted sessions: a peer misbehaving inside TLS draws the findings it draws in plaintext, and
decryption that stops on a damaged record is the capture's finding (forged sessions: tests/tlsforge.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbdscope.tls.keylog import KeyLog
from tests import nbdwire as w
from tests.judging import analyze, fired
from tests.tlsforge import Forge, Script, wrap
from tests.wirescripts import handshake

SIZE = 1 << 20
OPENING: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]
STARTTLS: Script = [("c2s", w.option(5)), ("s2c", w.opt_reply(5, 1))]

MISBEHAVIOURS: dict[str, Script] = {
    "read-beyond-size": handshake(0x14D, SIZE)[2:] + [("c2s", w.request(0, 1, SIZE - 512, 4096)),
                                                     ("s2c", w.simple_reply(1, 22))],
    "unknown-command": handshake(0x14D, SIZE)[2:] + [("c2s", w.request(99, 2, 0, 0)), ("s2c", w.simple_reply(2, 22))],
    "chunk-unnegotiated": handshake(0x14D, SIZE, structured=False)[2:] + [
        ("c2s", w.request(0, 3, 0, 512)), ("s2c", w.chunk(3, 1, (0).to_bytes(8, "big") + bytes(512), 1))],
    "unsolicited-reply": handshake(0x14D, SIZE)[2:] + [("s2c", w.simple_reply(77))],
    "write-on-read-only": handshake(0x14F, SIZE)[2:] + [("c2s", w.request(1, 4, 0, 512, data=bytes(512))),
                                                       ("s2c", w.simple_reply(4))],
}


def _findings(result: object) -> list[tuple[str, str]]:
    return sorted((a.check, a.blame) for a in result.anomalies)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(MISBEHAVIOURS))
def test_misbehaviour_inside_tls_draws_the_plaintext_findings(tmp_path: Path, name: str) -> None:
    inside = MISBEHAVIOURS[name]
    plain = analyze(OPENING + inside, closed_by="c2s")
    forge = Forge(0x1303)
    (tmp_path / "keys.log").write_text(forge.keylog())
    encrypted = analyze(OPENING + STARTTLS + wrap(forge, inside), closed_by="c2s",
                        tls_keys=KeyLog(str(tmp_path / "keys.log")))
    assert _findings(plain), "the misbehaviour draws no finding in plaintext"
    assert _findings(encrypted) == _findings(plain)
    assert encrypted.sessions[0].tls_decryption == "decrypted"
    without = analyze(OPENING + STARTTLS + wrap(forge, inside), closed_by="c2s")
    assert not set(_findings(plain)) & set(_findings(without))  # without the key log none of it is seen


def test_a_record_failing_authentication_is_the_captures_finding(tmp_path: Path) -> None:
    forge = Forge(0x1301)
    script = OPENING + STARTTLS + wrap(forge, handshake(0x14D, SIZE)[2:] + [("c2s", w.request(0, 1, 0, 512)),
                                                                          ("s2c", w.simple_reply(1, 0, bytes(512)))])
    d, data = script[-1]
    script[-1] = (d, data[:-1] + bytes([data[-1] ^ 0x80]))  # the tag of the last record
    (tmp_path / "keys.log").write_text(forge.keylog())
    result = analyze(script, closed_by="c2s", tls_keys=KeyLog(str(tmp_path / "keys.log")))
    [finding] = fired(result, "tls-decryption.undecryptable", blame="capture")
    assert "SERVER_TRAFFIC_SECRET_0 failed authentication" in finding.message and finding.frame == len(script)
    assert result.sessions[0].tls_summary().startswith("TLS, undecryptable: ")
    assert [a.check for a in result.anomalies] == ["tls-decryption.undecryptable"]


def test_option_state_from_before_starttls_is_forgotten(tmp_path: Path) -> None:
    """opt-starttls.3, opt-structured-reply.7: structured replies agreed in plaintext do not carry into TLS, so a
    server that sends a chunk inside TLS without a new agreement is judged as in a session that never had one."""
    forge = Forge(0x1301)
    before: Script = [("c2s", w.option(8)), ("s2c", w.opt_reply(8, 1))]
    inside = handshake(0x14D, SIZE, structured=False)[2:] + [
        ("c2s", w.request(0, 3, 0, 512)), ("s2c", w.chunk(3, 1, (0).to_bytes(8, "big") + bytes(512), 1))]
    (tmp_path / "keys.log").write_text(forge.keylog())
    result = analyze(OPENING + before + STARTTLS + wrap(forge, inside), closed_by="c2s",
                     tls_keys=KeyLog(str(tmp_path / "keys.log")))
    plain = analyze(OPENING + inside, closed_by="c2s")
    chunk_checks = {c for c, _ in _findings(plain)}
    assert chunk_checks and chunk_checks <= {c for c, _ in _findings(result)}
    assert result.sessions[0].structured_replies is False


def _inside(tmp_path: Path, inside: Script) -> object:
    forge = Forge(0x1301)
    (tmp_path / "keys.log").write_text(forge.keylog())
    return analyze(OPENING + STARTTLS + wrap(forge, inside), closed_by="c2s",
                   tls_keys=KeyLog(str(tmp_path / "keys.log")))


def test_starttls_inside_tls(tmp_path: Path) -> None:
    """tls-client.3, forcedtls.2, selectivetls.2: seen only with the key log."""
    acked = _inside(tmp_path, [("c2s", w.option(5)), ("s2c", w.opt_reply(5, 1))])
    [client] = fired(acked, "tls-protocol.starttls-twice", blame="client")
    assert "inside TLS" in client.message
    [server] = fired(acked, "tls-protocol.starttls-inside-tls-reply", blame="server")
    assert "NBD_REP_ACK" in server.message
    refused = _inside(tmp_path, [("c2s", w.option(5)), ("s2c", w.opt_reply(5, (1 << 31) | 3))])
    assert [a.check for a in refused.anomalies if a.blame == "server"] == []  # NBD_REP_ERR_INVALID: as asked
    assert fired(refused, "tls-protocol.starttls-twice", blame="client")


def test_tls_required_inside_tls(tmp_path: Path) -> None:
    """forcedtls.9, selectivetls.5."""
    result = _inside(tmp_path, [("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, (1 << 31) | 5))])
    [finding] = fired(result, "tls-protocol.tls-reqd-inside-tls", blame="server")
    assert "NBD_OPT_GO" in finding.message
    plain = analyze(OPENING + [("c2s", w.option(7, w.opt_go_data(""))), ("s2c", w.opt_reply(7, (1 << 31) | 5))],
                    closed_by="c2s")
    assert not [a for a in plain.anomalies if a.check == "tls-protocol.tls-reqd-inside-tls"]


def test_extended_headers_from_before_starttls_do_not_carry_into_tls(tmp_path: Path) -> None:
    """ext.opt-extended-headers.11: agreed in plaintext, then used inside TLS without a new agreement."""
    forge = Forge(0x1301)
    before: Script = [("c2s", w.option(11)), ("s2c", w.opt_reply(11, 1))]
    inside = handshake(0x14D, SIZE, structured=False)[2:] + [("c2s", w.ext_request(3, 1, 0, 0))]
    (tmp_path / "keys.log").write_text(forge.keylog())
    result = analyze(OPENING + before + STARTTLS + wrap(forge, inside), closed_by="c2s",
                     tls_keys=KeyLog(str(tmp_path / "keys.log")))
    assert fired(result, "structured-reply-not-negotiated.request-header-style", blame="client")
    assert result.sessions[0].extended_headers is False


def test_the_reports_and_the_tui_say_how_tls_went(tmp_path: Path) -> None:
    from nbdscope.report.sessionpanel import session_panel

    forge = Forge(0x1302)
    (tmp_path / "keys.log").write_text(forge.keylog())
    script = OPENING + STARTTLS + wrap(forge, handshake(0x14D, SIZE)[2:])
    decrypted = analyze(script, closed_by="c2s", tls_keys=KeyLog(str(tmp_path / "keys.log"))).sessions[0]
    (tmp_path / "other.log").write_text(Forge(0x1302).keylog())
    keyless = analyze(script, closed_by="c2s", tls_keys=KeyLog(str(tmp_path / "other.log"))).sessions[0]
    plain = analyze(script, closed_by="c2s").sessions[0]
    want = "TLS, decrypted (TLS 1.3, TLS_AES_256_GCM_SHA384)"
    assert dict(session_panel(decrypted, "report").rows)["TLS"].startswith(want + "; ")
    assert dict(session_panel(decrypted, "screen").rows)["handshake"] == f"fixed-newstyle   {want}"
    assert decrypted.as_json()["tls_decryption"] == {"status": "decrypted", "detail": want.split("(")[1][:-1]}
    assert dict(session_panel(keyless, "report").rows)["TLS"].startswith("TLS, no key: the key log has no line")
    assert keyless.as_json()["tls_decryption"]["status"] == "no-key"  # type: ignore[index]
    assert dict(session_panel(plain, "report").rows)["TLS"].endswith("encrypted bytes not decoded")
    assert "tls_decryption" not in plain.as_json()
