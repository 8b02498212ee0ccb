"""Never the wrong culprit, with real peers: captures cut by the snapshot length or at either end,
tcpdump stopped while a client is still reading, handshakes that end before transmission (nbdinfo
--list, a missing export, TLS required, qemu-img info), and the proxy's own actions."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nbdscope.capture.processes import stop_process
from tests.live import ENV, free_port, nbdsh, process, proxy, run, tcpdump
from tests.oracles import CAPTURES, report

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdinfo", "qemu-img", "tcpdump",
                                                                    "editcap")),
                                 reason="needs nbdkit, nbdinfo, qemu-img, tcpdump and editcap")]

PEERS = {"client", "server"}


def peer_findings(rep: dict) -> list[tuple[str, str, str]]:
    return [(a.get("check", a["rule"]), a["blame"], a["message"]) for a in rep["anomalies"] if a["blame"] in PEERS]


# ------------------------------------------------------------------- cut captures

@pytest.mark.parametrize("args", [["-s", "120"], ["-s", "90"], ["-r"]], ids=["snaplen-120", "snaplen-90", "middle"])
def test_cut_captures_blame_only_the_capture(tmp_path: Path, args: list[str]) -> None:
    """qemu-img convert and map against nbdkit (both peers correct), cut by editcap."""
    src = CAPTURES / "qemu-img-convert-map.pcap"
    cut = tmp_path / "cut.pcap"
    if args == ["-r"]:  # keep the middle only: the capture starts after the handshake and stops mid-exchange
        frames = int(run(["capinfos", "-c", "-M", str(src)]).split()[-1]) if shutil.which("capinfos") else 90
        run(["editcap", "-r", str(src), str(cut), f"{frames // 4}-{frames // 2}"])
    else:
        run(["editcap", *args, str(src), str(cut)])
    rep = report(cut)
    assert rep["sessions"]
    assert peer_findings(rep) == []
    assert {a["rule"] for a in rep["anomalies"]} <= {"capture-gap", "malformed-message", "handshake-outcome"}
    if args[0] == "-s":
        assert any(a.get("check") == "capture-gap.lost-bytes" for a in rep["anomalies"])


def test_tcpdump_stopped_while_the_client_is_still_reading(tmp_path: Path) -> None:
    port = free_port()
    pcap = tmp_path / "stopped.pcap"
    reader = "import time\nwhile True:\n    h.pread(65536, 0)\n"
    with process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "memory", "1M"], port=port):
        client = subprocess.Popen(nbdsh(f"nbd://127.0.0.1:{port}", reader), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=ENV)
        try:
            time.sleep(0.3)
            with tcpdump(pcap, port):  # starts mid-stream and stops while the client still reads
                time.sleep(0.5)
        finally:
            stop_process(client)
    rep = report(pcap)
    assert rep["sessions"]
    assert peer_findings(rep) == []
    assert {a["blame"] for a in rep["anomalies"]} <= {"capture"}
    assert any(a.get("check") == "capture-gap.started-mid-stream" for a in rep["anomalies"])


# ------------------------------------------------------------------- handshake outcomes

def captured(tmp_path: Path, server: list[str], *clients: list[str]) -> dict:
    port = free_port()
    pcap = tmp_path / "hs.pcap"
    cmd = [a.replace("PORT", str(port)) for a in server]
    with process(cmd, port=port), tcpdump(pcap, port):
        for c in clients:
            run([a.replace("PORT", str(port)) for a in c], check=False)
    return report(pcap)


def outcome_of(rep: dict) -> tuple[list[dict], list[dict]]:
    sessions = [s for s in rep["sessions"] if s["outcome"] is not None]
    hits = [a for a in rep["anomalies"] if a["rule"] == "handshake-outcome"]
    return sessions, hits


def test_nbdinfo_list(tmp_path: Path) -> None:
    rep = captured(tmp_path, ["nbdkit", "-f", "-p", "PORT", "-i", "127.0.0.1", "memory", "1M"],
                   ["nbdinfo", "--list", "nbd://127.0.0.1:PORT"])
    sessions, hits = outcome_of(rep)
    assert sessions and sessions[0]["outcome"]["kind"] == "exports-listed"
    assert sessions[0]["disconnect"] == "abort" and sessions[0]["export"]["size"] == 1 << 20
    assert [h["check"] for h in hits] == ["handshake-outcome.exports-listed"] and hits[0]["severity"] == "info"
    assert peer_findings(rep) == [] or all(b == "client" and c.startswith("handshake-outcome")
                                           for c, b, _ in peer_findings(rep))
    assert not [a for a in rep["anomalies"] if a["severity"] != "info"]


def test_nbdinfo_asking_for_a_missing_export(tmp_path: Path) -> None:
    rep = captured(tmp_path, ["nbdkit", "-f", "-p", "PORT", "-i", "127.0.0.1", "--filter=exportname", "memory", "1M",
                              "exportname=disk", "exportname-strict=true"],
                   ["nbdinfo", "nbd://127.0.0.1:PORT/nosuch"])
    sessions, hits = outcome_of(rep)
    o = sessions[0]["outcome"]
    assert (o["kind"], o["option"], o["export"]) == ("option-failed", "NBD_OPT_GO", "nosuch")
    assert o["error"].startswith("NBD_REP_ERR_") and o["aborted"]
    assert "NBD_OPT_GO 'nosuch' failed with NBD_REP_ERR_" in hits[0]["message"]
    assert not [a for a in rep["anomalies"] if a["severity"] != "info"], rep["anomalies"]


def test_plaintext_client_against_tls_required(tmp_path: Path) -> None:
    psk = tmp_path / "keys.psk"
    psk.write_text("alice:" + "ab" * 32 + "\n")
    rep = captured(tmp_path, ["nbdkit", "-f", "-p", "PORT", "-i", "127.0.0.1", "--tls=require", f"--tls-psk={psk}",
                              "memory", "1M"], ["nbdinfo", "nbd://127.0.0.1:PORT"])
    sessions, hits = outcome_of(rep)
    assert sessions and all(s["outcome"]["kind"] == "tls-required" for s in sessions)
    assert hits and "requires TLS" in hits[0]["message"]
    assert not [a for a in rep["anomalies"] if a["rule"] == "hard-disconnect"]


def test_qemu_img_info_reaches_transmission_and_ends_softly(tmp_path: Path) -> None:
    rep = captured(tmp_path, ["nbdkit", "-f", "-p", "PORT", "-i", "127.0.0.1", "memory", "1M"],
                   ["qemu-img", "info", "nbd://127.0.0.1:PORT"])
    assert rep["sessions"] and all(s["outcome"] is None for s in rep["sessions"])
    assert {s["disconnect"] for s in rep["sessions"]} == {"soft"}
    assert rep["anomalies"] == []


# ------------------------------------------------------------------- the proxy's own doing

def test_cleared_send_cache_is_not_nbdkits_fault(tmp_path: Path) -> None:
    """--clear-flags SEND_CACHE in front of nbdkit, a client doing CACHE anyway: nbdkit sent SEND_CACHE and
    answered correctly, so nothing blames it; the rewrite is the proxy's, in console, JSONL and pcapng."""
    up, front = free_port(), free_port()
    server = ["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"]
    with process(server, port=up), proxy(tmp_path, f"127.0.0.1:{front}", f"127.0.0.1:{up}",
                                          "--clear-flags", "SEND_CACHE"):
        run(nbdsh(f"nbd://127.0.0.1:{front}", "h.set_strict_mode(0)\nh.cache(4096, 0)\nh.shutdown()\n"))
    live = [json.loads(x) for x in (tmp_path / "live.jsonl").read_text().splitlines()]
    findings = [r for r in live if r["type"] == "ANOMALY"]
    assert not [r for r in findings if r["blame"] == "server"], findings
    assert [r["check"] for r in findings if r["blame"] == "proxy"] == ["proxy-action.rewrote-flags"]
    assert "proxy-action" in (tmp_path / "proxy.out").read_text()
    rep = report(tmp_path / "live.pcapng")  # the pcapng alone does not know the server's flags: the comment says
    comments = subprocess.run(["tshark", "-r", str(tmp_path / "live.pcapng"), "-T", "fields", "-e",
                               "frame.comment"], capture_output=True, text=True, timeout=60).stdout
    assert "rewrote transmission flags" in comments
    assert rep["sessions"]


def test_sessions_closed_at_shutdown_are_the_proxys(tmp_path: Path) -> None:
    up, front = free_port(), free_port()
    server = ["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"]
    with process(server, port=up), proxy(tmp_path, f"127.0.0.1:{front}", f"127.0.0.1:{up}", "--grace", "0.3") as px:
        client = subprocess.Popen(nbdsh(f"nbd://127.0.0.1:{front}", "import time\nh.pread(512, 0)\ntime.sleep(30)\n"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        try:
            time.sleep(1.0)
            px.send_signal(signal.SIGINT)
            px.wait(timeout=20)
        finally:
            stop_process(client)
    live = [json.loads(x) for x in (tmp_path / "live.jsonl").read_text().splitlines()]
    findings = [r for r in live if r["type"] == "ANOMALY"]
    assert [r["check"] for r in findings] == ["proxy-action.closed-at-shutdown"], findings
    assert findings[0]["blame"] == "proxy"
    comments = subprocess.run(["tshark", "-r", str(tmp_path / "live.pcapng"), "-T", "fields", "-e",
                               "frame.comment"], capture_output=True, text=True, timeout=60).stdout
    assert "closed this session at shutdown" in comments
