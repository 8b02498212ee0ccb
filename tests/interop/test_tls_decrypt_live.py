"""Live TLS decryption (--tls-keylog): nbdkit --tls=require with a PSK and with X.509 certificates made here by
certtool; nbdsh, nbdcopy, qemu-img and nbdinfo write their secrets to SSLKEYLOGFILE (GnuTLS). The decrypted
decode must match nbdkit's log filter request by request; TLS 1.2 (forced through a GnuTLS system priority
file) decrypts too; a client misbehaving inside TLS draws the findings it draws in plaintext; wrong or missing
keys leave the session "TLS, no key" in one line; the proxy stays byte-exact while it decodes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import nbdwire as w
from tests.live import ENV, SYSTEM_PYTHON, free_port, process, proxy, run, tcpdump
from tests.nbdwire import recv_exactly
from tests.oracles import analyze, jsonl, nbdkit_log, report
from tests.tlspeers import make_pki

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdinfo", "nbdcopy", "qemu-img", "psktool",
                                                                   "certtool", "tcpdump")) or os.geteuid() != 0,
                                 reason="needs nbdkit, libnbd tools, qemu-img, gnutls-bin and root")]

NBDSH_SCRIPT = """
h.pwrite(b'a' * 65536, 0)
h.pwrite(b'b' * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
h.pread(8192, 4096)
h.flush()
h.trim(65536, 2 << 20)
h.zero(4096, 3 << 20, nbd.CMD_FLAG_NO_HOLE)
h.block_status(1 << 20, 0, lambda *a: 0)
buf = nbd.Buffer(512)
c = [h.aio_pread(buf, i * 512) for i in range(16)]
while h.aio_in_flight() > 0:
    h.poll(-1)
h.shutdown()
"""


def nbdsh(uri: str, script: str, base_allocation: bool = False) -> list[str]:
    """nbdsh connecting itself: a URI naming a key or certificate file needs set_uri_allow_local_file."""
    connect = (f"h.set_uri_allow_local_file(True)\n{'h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)' if base_allocation else ''}"
               f"\nh.connect_uri({uri!r})\n")
    return [SYSTEM_PYTHON, "-m", "nbd", "-c", connect + script]


def _client(cmd: list[str], keylog: Path, **extra: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**ENV, "SSLKEYLOGFILE": str(keylog), **extra})
    assert proc.returncode == 0, f"{cmd[0]}: {proc.stderr.strip()}"


def _decoded_like_the_log(cap: Path, log: Path, keylog: Path) -> dict:
    """Each nbdkit connection's logged requests are one decrypted session's requests; the JSON report."""
    logged, _ = nbdkit_log(log)
    assert sum(len(v) for v in logged.values()) >= 10
    decoded: dict[str, list[tuple[str, int, int]]] = {}
    for r in jsonl(cap, "--tls-keylog", str(keylog)):
        if r["type"].startswith("NBD_CMD_") and r["dir"] == "c2s" and r["type"] != "NBD_CMD_DISC":
            decoded.setdefault(r["session"], []).append((r["type"], r["offset"], r["length"]))
    remaining = dict(decoded)
    for conn, requests in logged.items():
        want = Counter((q.command, q.offset, q.length) for q in requests)
        match = next((s for s, got in remaining.items() if Counter(got) == want), None)
        assert match is not None, f"nbdkit connection {conn} ({sum(want.values())} requests) not decoded alike"
        del remaining[match]
    assert not any(remaining.values()), remaining
    rep = report(cap, "--tls-keylog", str(keylog))
    assert [s["tls_decryption"]["status"] for s in rep["sessions"]] == ["decrypted"] * len(rep["sessions"])
    assert not [a for a in rep["anomalies"] if a["severity"] != "info"], rep["anomalies"]
    return rep


def test_psk_clients_decrypt_like_nbdkits_log(tmp_path: Path) -> None:
    port, psk, keylog = free_port(), tmp_path / "keys.psk", tmp_path / "ssl.keylog"
    run(["psktool", "-u", "alice", "-p", str(psk)])
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(384 << 10))
    log, cap = tmp_path / "nbdkit.log", tmp_path / "psk.pcap"
    uri = f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={psk}"
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-psk={psk}",
              "--filter=log", "memory", "4M", f"logfile={log}"]
    with process(server, port=port), tcpdump(cap, port):
        _client(nbdsh(uri, NBDSH_SCRIPT, base_allocation=True), keylog)
        _client(["nbdcopy", "--connections=2", str(src), uri], keylog)
        _client(["qemu-img", "convert", "-n", "--object",
                 f"tls-creds-psk,id=tls0,endpoint=client,dir={tmp_path},username=alice", "-f", "raw", str(src),
                 "--target-image-opts", f"driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0"], keylog)
    rep = _decoded_like_the_log(cap, log, keylog)
    assert {s["tls_decryption"]["detail"].split(",")[0] for s in rep["sessions"]} == {"TLS 1.3"}
    # the same capture without the key log: nothing of the transmission is decoded
    plain = report(cap)
    assert all("tls_decryption" not in s and not s["commands"] for s in plain["sessions"])


def test_x509_clients_decrypt_like_nbdkits_log(tmp_path: Path) -> None:
    port, pki, keylog = free_port(), make_pki(tmp_path / "pki"), tmp_path / "ssl.keylog"
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(256 << 10))
    log, cap = tmp_path / "nbdkit.log", tmp_path / "x509.pcap"
    uri = f"nbds://127.0.0.1:{port}/?tls-certificates={pki}"
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-certificates={pki}",
              "--filter=log", "memory", "4M", f"logfile={log}"]
    with process(server, port=port), tcpdump(cap, port):
        _client(nbdsh(uri, NBDSH_SCRIPT, base_allocation=True), keylog)
        _client(["nbdcopy", str(src), uri], keylog)
        _client(["qemu-img", "convert", "-n", "--object", f"tls-creds-x509,id=tls0,endpoint=client,dir={pki}",
                 "-f", "raw", str(src), "--target-image-opts",
                 f"driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0"], keylog)
        _client(["nbdinfo", uri], keylog)
    _decoded_like_the_log(cap, log, keylog)


@pytest.mark.parametrize("creds", ["psk", "x509"])
def test_tls12_forced_on_the_server_decrypts(tmp_path: Path, creds: str) -> None:
    """GnuTLS 3.7's system priority file: [overrides] disabled-version = tls1.3, for nbdkit only."""
    priority = tmp_path / "gnutls.conf"
    priority.write_text("[overrides]\ndisabled-version = tls1.3\n")
    port, keylog, log, cap = free_port(), tmp_path / "ssl.keylog", tmp_path / "nbdkit.log", tmp_path / "tls12.pcap"
    if creds == "psk":
        run(["psktool", "-u", "alice", "-p", str(tmp_path / "keys.psk")])
        tls, uri = f"--tls-psk={tmp_path / 'keys.psk'}", f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={tmp_path / 'keys.psk'}"
    else:
        pki = make_pki(tmp_path / "pki")
        tls, uri = f"--tls-certificates={pki}", f"nbds://127.0.0.1:{port}/?tls-certificates={pki}"
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", tls, "--filter=log", "memory",
              "4M", f"logfile={log}"]
    ENV["GNUTLS_SYSTEM_PRIORITY_FILE"] = str(priority)  # read by the server process process() starts
    try:
        with process(server, port=port), tcpdump(cap, port):
            del ENV["GNUTLS_SYSTEM_PRIORITY_FILE"]
            _client(nbdsh(uri, NBDSH_SCRIPT, base_allocation=True), keylog)
    finally:
        ENV.pop("GNUTLS_SYSTEM_PRIORITY_FILE", None)
    assert "CLIENT_RANDOM" in keylog.read_text()
    rep = _decoded_like_the_log(cap, log, keylog)
    assert [s["tls_decryption"]["detail"].split(",")[0] for s in rep["sessions"]] == ["TLS 1.2"]




def _replies(sock: socket.socket | ssl.SSLSocket) -> None:
    while True:
        _magic, _opt, rep, length = struct.unpack(">QIII", recv_exactly(sock, 20))
        recv_exactly(sock, length)
        if rep == 1 or rep & (1 << 31):
            return


def _misbehave(sock: socket.socket | ssl.SSLSocket) -> None:
    """GO, then a read past the end of the 1 MiB export and an unknown command (nbdkit answers both with an
    error), then a hang-up without NBD_CMD_DISC."""
    sock.sendall(w.option(7, w.opt_go_data("")))
    _replies(sock)
    sock.sendall(w.request(0, 1, (1 << 20) - 512, 4096))
    recv_exactly(sock, 16)
    sock.sendall(w.request(77, 2, 0, 0))
    recv_exactly(sock, 16)


def _session(port: int, ca: Path | None, keylog: Path | None) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        recv_exactly(raw, 18)
        raw.sendall(w.client_flags())
        if ca is None:
            _misbehave(raw)
            return
        raw.sendall(w.option(5))
        _replies(raw)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.keylog_filename = str(keylog)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            _misbehave(tls)


def test_a_misbehaving_client_inside_tls_draws_the_plaintext_findings(tmp_path: Path) -> None:
    pki, keylog = make_pki(tmp_path / "pki"), tmp_path / "py.keylog"
    found = {}
    for mode in ("plain", "tls"):
        port, cap = free_port(), tmp_path / f"{mode}.pcap"
        tls = ["--tls=require", f"--tls-certificates={pki}"] if mode == "tls" else []
        with process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", *tls, "memory", "1M"], port=port), \
                tcpdump(cap, port):
            _session(port, pki / "ca-cert.pem" if mode == "tls" else None, keylog)
            time.sleep(0.5)  # the closing segments are in the capture before tcpdump stops
        rep = report(cap, *(["--tls-keylog", str(keylog)] if mode == "tls" else []))
        found[mode] = sorted((a["check"], a["blame"]) for a in rep["anomalies"])
    checks = {check for check, _ in found["plain"]}
    assert {"unknown-command.undefined", "hard-disconnect.client-no-disc"} <= checks, found
    assert any(c.startswith("request-beyond-export") for c in checks), found
    assert found["tls"] == found["plain"]


def test_wrong_missing_and_cut_key_logs_say_so_in_one_line(tmp_path: Path) -> None:
    port, psk, keylog, cap = free_port(), tmp_path / "keys.psk", tmp_path / "ssl.keylog", tmp_path / "psk.pcap"
    run(["psktool", "-u", "alice", "-p", str(psk)])
    with process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-psk={psk}", "memory",
                  "1M"], port=port), tcpdump(cap, port):
        _client(["nbdinfo", f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={psk}"], keylog)
        _client(["nbdinfo", f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={psk}"], tmp_path / "other.keylog")
    text = keylog.read_text()
    other = tmp_path / "other.keylog"
    cut = tmp_path / "cut.keylog"
    cut.write_text(text[:len(text) // 2])
    for given, reason in ((other, "has no line for this session's client random"), (cut, "lacks"),
                          (psk, "has no line")):
        proc = analyze("--format", "json", str(cap), "--tls-keylog", str(given))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        statuses = [s["tls_decryption"] for s in json.loads(proc.stdout)["sessions"]]
        assert statuses and all(s["status"] == "no-key" for s in statuses[:1]) and reason in statuses[0]["detail"]
    proc = analyze(str(cap), "--tls-keylog", str(tmp_path / "absent.keylog"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such file" in proc.stderr


def test_proxy_with_a_key_log_stays_byte_exact_and_decodes(tmp_path: Path) -> None:
    port, listen, psk, keylog = free_port(), free_port(), tmp_path / "keys.psk", tmp_path / "ssl.keylog"
    run(["psktool", "-u", "alice", "-p", str(psk)])
    src, back = tmp_path / "src.bin", tmp_path / "back.bin"
    src.write_bytes(os.urandom(1 << 20))
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-psk={psk}", "memory", "4M"]
    uri = f"nbds://alice@127.0.0.1:{listen}/?tls-psk-file={psk}"
    with process(server, port=port), proxy(tmp_path, f"127.0.0.1:{listen}", f"127.0.0.1:{port}",
                                           "--tls-keylog", str(keylog)):
        _client(["nbdcopy", str(src), uri], keylog)  # the key log is written while the proxy runs
        _client(["nbdcopy", uri, str(back)], keylog)
    assert hashlib.sha256(back.read_bytes()[:1 << 20]).digest() == hashlib.sha256(src.read_bytes()).digest()
    lines = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    writes = sum(r["length"] for r in lines if r.get("type") == "NBD_CMD_WRITE" and r["dir"] == "c2s")
    reads = sum(r["length"] for r in lines if r.get("type") == "NBD_CMD_READ" and r["dir"] == "c2s")
    assert writes == 1 << 20 and reads >= 1 << 20, (writes, reads)
    marks = [r["decryption"] for r in lines if r.get("type") == "TLS_DATA" and "decryption" in r]
    assert marks and set(marks) == {"decrypted"}
    assert not [r for r in lines if r.get("type") == "ANOMALY" and r["severity"] != "info"]
    assert sys.executable  # (the proxy ran under this interpreter: tests/live.proxy)


def _secrets(keylog: Path) -> list[bytes]:
    """Every secret of a key log, as hex text and as bytes: no output may hold one."""
    out = []
    for line in keylog.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            out += [parts[2].encode(), parts[2].upper().encode(), bytes.fromhex(parts[2])]
    return out


def test_live_capture_decrypts_with_a_key_log_written_meanwhile(tmp_path: Path) -> None:
    port, psk, keylog = free_port(), tmp_path / "keys.psk", tmp_path / "later.keylog"  # not there yet
    run(["psktool", "-u", "alice", "-p", str(psk)])
    log, out, err, saved = tmp_path / "nbdkit.log", tmp_path / "live.jsonl", tmp_path / "live.err", tmp_path / "s.pcapng"
    with open(err, "w") as errf:
        live = subprocess.Popen([sys.executable, "-m", "nbdscope", "live", "-i", "lo", "--filter", f"tcp port {port}",
                                 "--format", "jsonl", "-o", str(out), "-w", str(saved), "--tls-keylog", str(keylog)],
                                stderr=errf)
    try:
        deadline = time.monotonic() + 15
        while "capturing on lo" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-psk={psk}",
                  "--filter=log", "memory", "4M", f"logfile={log}"]
        with process(server, port=port):
            _client(nbdsh(f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={psk}", NBDSH_SCRIPT, base_allocation=True),
                    keylog)
            time.sleep(0.5)
        live.send_signal(signal.SIGINT)
        assert live.wait(20) == 0
    finally:
        if live.poll() is None:
            live.kill()
            live.wait(5)
    requests, _ = nbdkit_log(log)
    logged = Counter((r.command, r.offset, r.length) for conn in requests for r in requests[conn])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    decoded = Counter((r["type"], r["offset"], r["length"]) for r in records
                      if r["type"] in {c for c, _, _ in logged} and r["dir"] == "c2s")
    assert sum(logged.values()) >= 10 and decoded == logged
    assert [r["decryption"] for r in records if r["type"] == "TLS_DATA" and "decryption" in r] == ["decrypted"]
    again = jsonl(saved, "--tls-keylog", str(keylog))
    def same(lines: list[dict]) -> list[dict]:  # what live and the saved file must agree on (not the input's name)
        return [{k: v for k, v in r.items() if k not in ("input", "inputs")} for r in lines if r["type"] != "ANOMALY"]
    assert same(again) == same(records)
    assert not any(s in out.read_bytes() for s in _secrets(keylog))


def test_redaction_hides_decrypted_data_and_no_output_holds_the_key_log(tmp_path: Path) -> None:
    port, psk, keylog, cap = free_port(), tmp_path / "keys.psk", tmp_path / "ssl.keylog", tmp_path / "psk.pcap"
    run(["psktool", "-u", "alice", "-p", str(psk)])
    with process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-psk={psk}", "memory",
                  "4M"], port=port), tcpdump(cap, port):
        _client(nbdsh(f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={psk}", NBDSH_SCRIPT, base_allocation=True),
                keylog)
    redacted = tmp_path / "redacted.pcapng"
    proc = analyze(str(cap), "--tls-keylog", str(keylog), "--redact", "-o", str(redacted))
    assert proc.returncode == 0, proc.stderr
    outputs = [redacted.read_bytes(), proc.stdout.encode(), analyze("--format", "jsonl", str(cap), "--tls-keylog",
                                                                    str(keylog)).stdout.encode(),
               analyze("--format", "json", str(cap), "--tls-keylog", str(keylog)).stdout.encode()]
    assert not any(s in o for s in _secrets(keylog) for o in outputs)
    assert b"a" * 4096 not in cap.read_bytes()  # (the data is encrypted on the wire to begin with)
    # the handshake and the requests before the first write still open; the write's zeroed ciphertext does not
    rep = report(redacted, "--tls-keylog", str(keylog))
    [session] = rep["sessions"]
    assert session["tls_decryption"]["status"] == "undecryptable"
    assert "failed authentication" in session["tls_decryption"]["detail"]
    assert [a["check"] for a in rep["anomalies"] if a["rule"] == "tls-decryption"] == ["tls-decryption.undecryptable"]
    assert report(cap, "--tls-keylog", str(keylog))["sessions"][0]["commands"]["NBD_CMD_WRITE"]["count"] == 2


@pytest.mark.parametrize("verify", ["ca", "insecure"])
def test_proxy_terminating_tls_relays_and_decodes(tmp_path: Path, verify: str) -> None:
    """--tls-terminate: nbdcopy (X.509) talks TLS to the proxy, the proxy its own TLS to nbdkit; the data survives
    the round trip and the plaintext between is decoded (no key log anywhere)."""
    pki = make_pki(tmp_path / "pki")
    port, listen = free_port(), free_port()
    src, back = tmp_path / "src.bin", tmp_path / "back.bin"
    src.write_bytes(os.urandom(1 << 20))
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-certificates={pki}",
              "memory", "4M"]
    upstream = ["--upstream-tls-ca", str(pki / "ca-cert.pem")] if verify == "ca" else ["--upstream-tls-insecure"]
    uri = f"nbds://127.0.0.1:{listen}/?tls-certificates={pki}"
    with process(server, port=port), proxy(tmp_path, f"127.0.0.1:{listen}", f"127.0.0.1:{port}", "--tls-terminate",
                                           str(pki / "server-cert.pem"), str(pki / "server-key.pem"), *upstream):
        _client(["nbdcopy", str(src), uri], tmp_path / "unused.keylog")
        _client(["nbdcopy", uri, str(back)], tmp_path / "unused.keylog")
    assert back.read_bytes()[:1 << 20] == src.read_bytes()
    lines = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    assert sum(r["length"] for r in lines if r.get("type") == "NBD_CMD_WRITE") == 1 << 20
    assert sum(r["length"] for r in lines if r.get("type") == "NBD_CMD_READ" and r["dir"] == "c2s") == 1 << 20
    assert not [r for r in lines if r.get("type") == "ANOMALY" and r["severity"] != "info"]
    marks = [r["detail"] for r in lines if r.get("type") == "TLS_DATA" and r.get("decryption")]
    assert marks and all(m.startswith("TLS terminated by the source") for m in marks)


def test_proxy_terminating_tls_refuses_a_server_it_cannot_verify(tmp_path: Path) -> None:
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    port, listen = free_port(), free_port()
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require", f"--tls-certificates={pki}",
              "memory", "4M"]
    uri = f"nbds://127.0.0.1:{listen}/?tls-certificates={pki}"
    with process(server, port=port), proxy(tmp_path, f"127.0.0.1:{listen}", f"127.0.0.1:{port}", "--tls-terminate",
                                           str(pki / "server-cert.pem"), str(pki / "server-key.pem"),
                                           "--upstream-tls-ca", str(other / "ca-cert.pem")):
        proc = subprocess.run(["nbdinfo", uri], capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode != 0  # the proxy would not talk to an upstream whose certificate it cannot verify
