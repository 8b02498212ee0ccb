"""--tls-keylog from the command line and the TUI's file producer, on a forged TLS session written as a pcap:
the reports mark the session, a key log that cannot be read is one line and exit 2, and nothing of the key
log reaches an output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nbdscope.cli import main
from nbdscope.tls.keylog import KeyLog
from tests import nbdwire as w
from tests import pcapbuild as pb
from tests.tlsforge import Forge, wrap
from tests.wirescripts import go_handshake

STARTTLS = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags() + w.option(5)), ("s2c", w.opt_reply(5, 1))]
INSIDE = go_handshake()[2:] + [("c2s", w.request(0, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512))),
                               ("c2s", w.request(2, 2, 0, 0))]


def _capture(tmp_path: Path) -> tuple[Path, Path, Forge]:
    forge = Forge(0x1303)
    flow = pb.Flow()
    packets = flow.syn() + [flow.c2s(data) if d == "c2s" else flow.s2c(data)
                            for d, data in STARTTLS + wrap(forge, INSIDE) if data]
    cap, keys = tmp_path / "tls.pcap", tmp_path / "keys.log"
    pb.write_pcap(str(cap), [(1000.0 + i / 100, pb.frame(1, p)) for i, p in enumerate(packets)])
    keys.write_text(forge.keylog())
    return cap, keys, forge


def test_analyze_marks_the_session_and_keeps_the_secrets_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap, keys, forge = _capture(tmp_path)
    assert main(["analyze", "--format", "json", str(cap), "--tls-keylog", str(keys)]) == 0
    out = capsys.readouterr().out
    [session] = json.loads(out)["sessions"]
    assert session["tls_decryption"] == {"status": "decrypted", "detail": "TLS 1.3, TLS_CHACHA20_POLY1305_SHA256"}
    assert session["commands"]["NBD_CMD_READ"]["count"] == 1
    assert main(["analyze", "--format", "jsonl", str(cap), "--tls-keylog", str(keys)]) == 0
    out += capsys.readouterr().out
    assert main(["analyze", "--messages", str(cap), "--tls-keylog", str(keys)]) == 0
    text = capsys.readouterr().out
    words = " ".join(text.replace("│", " ").split())  # (the panel wraps long rows at the terminal's width)
    assert "TLS, decrypted (TLS 1.3, TLS_CHACHA20_POLY1305_SHA256)" in words and "NBD_CMD_READ" in text
    for secret in [*forge.secrets.values(), forge.master]:
        assert secret.hex() not in out + text and secret.hex().upper() not in out + text


def test_a_key_log_that_cannot_be_read_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap, _, _ = _capture(tmp_path)
    assert main(["analyze", str(cap), "--tls-keylog", str(tmp_path / "absent.log")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read key log" in err and "no such file" in err
    big = tmp_path / "big.log"
    with open(big, "wb") as f:
        f.truncate((64 << 20) + 1)
    assert main(["analyze", str(cap), "--tls-keylog", str(big)]) == 2
    assert "more than the" in capsys.readouterr().err


def test_the_tui_file_producer_decrypts(tmp_path: Path) -> None:
    from nbdscope.report.sessionpanel import session_panel
    from nbdscope.tui.sources import file_producer
    from nbdscope.tui.store import Store

    cap, keys, _ = _capture(tmp_path)
    store = Store()
    producer = file_producer(store, [str(cap)], tls_keys=KeyLog(str(keys)))
    producer.start()
    deadline = time.monotonic() + 20
    while not store.done and time.monotonic() < deadline:
        time.sleep(0.02)
    [session] = store.sessions
    assert dict(session_panel(session, "screen").rows)["handshake"].endswith(
        "TLS, decrypted (TLS 1.3, TLS_CHACHA20_POLY1305_SHA256)")


@pytest.mark.parametrize(("args", "says"), [
    (["--tls-terminate", "/nonexistent.pem", "/nonexistent.key"], "cannot load /nonexistent.pem"),
    (["--upstream-tls-insecure"], "go with --tls-terminate"),
])
def test_proxy_tls_options_fail_in_one_line(capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    assert main(["proxy", "--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
