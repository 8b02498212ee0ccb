"""The command line as scripts use it (docs/CONTRACT.md): formats, exit codes, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.oracles import CAPTURES, messages

SEED = CAPTURES / "seed-unaligned-extent.pcap"
CLEAN = CAPTURES / "qemu-img-convert-map.pcap"


def nbdscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, text=True, timeout=60)


def test_json_report_shape() -> None:
    rep = json.loads(nbdscope("analyze", "--format", "json", str(SEED)).stdout)
    assert rep["nbdscope"] == "0.1.0" and rep["inputs"] == [str(SEED)]
    s = rep["sessions"][0]
    for key in ("id", "client", "server", "first_frame", "last_frame", "handshake", "tls", "export",
                "structured_replies", "extended_headers", "meta_contexts", "commands", "disconnect"):
        assert key in s
    assert set(s["export"]) >= {"name", "size", "transmission_flags", "flags", "min_block", "preferred_block",
                                "max_payload"}
    a = rep["anomalies"][0]
    assert set(a) >= {"rule", "severity", "blame", "session", "frame", "time", "message", "spec"}
    assert s["meta_contexts"] == {"1": "base:allocation"}
    assert s["disconnect"] in ("soft", "hard", "open")


def test_jsonl_lists_every_bit_of_flag_fields() -> None:
    lines = [json.loads(x) for x in nbdscope("analyze", "--format", "jsonl", str(SEED)).stdout.splitlines()]
    assert all({"session", "frame", "time", "epoch", "dir", "phase", "type"} <= set(r) for r in messages(lines))
    assert any(r["type"] == "ANOMALY" and r["rule"] == "unaligned-extent" for r in lines)
    info = next(r for r in lines if r["type"] == "NBD_REP_INFO" and "transmission_flags" in r)
    bits = info["transmission_flags"]["bits"]
    assert [b["bit"] for b in bits] == list(range(13))
    assert bits[8]["name"] == "NBD_FLAG_CAN_MULTI_CONN" and bits[10]["name"] == "NBD_FLAG_SEND_CACHE"
    req = next(r for r in lines if r["type"] == "NBD_CMD_BLOCK_STATUS")
    assert {"cookie", "offset", "length", "flags"} <= set(req) and req["phase"] == "transmission"


def test_fail_on_sets_exit_code() -> None:
    assert nbdscope("analyze", "--fail-on", "warning", str(SEED)).returncode == 1
    assert nbdscope("analyze", "--fail-on", "error", str(SEED)).returncode == 0  # the seed is a SHOULD: warning
    assert nbdscope("analyze", "--fail-on", "error", str(CLEAN)).returncode == 0
    assert nbdscope("analyze", str(SEED)).returncode == 0


def test_output_file_and_messages(tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    proc = nbdscope("analyze", "--messages", "-o", str(out), str(SEED))
    assert proc.returncode == 0 and proc.stdout == ""
    text = out.read_text()
    assert "NBD_REPLY_TYPE_BLOCK_STATUS" in text and "unaligned-extent" in text
    assert "HAS_FLAGS(0) READ_ONLY(1) SEND_DF(7)" in text and "NBD_FLAG_CAN_MULTI_CONN" not in text  # set bits
    bits = nbdscope("analyze", "--bits", str(SEED)).stdout
    assert "NBD_FLAG_CAN_MULTI_CONN" in bits  # --bits: every bit, set or not


def test_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"\x00" * 100)
    for args in (["analyze", str(tmp_path / "missing.pcap")], ["analyze", str(junk)], ["analyze", str(tmp_path)],
                 ["analyze", "-o", str(tmp_path / "no" / "dir.txt"), str(SEED)]):
        proc = nbdscope(*args)
        assert proc.returncode == 2, args
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert nbdscope("analyze", "--format", "xml", str(SEED)).returncode == 2


def test_truncated_capture_keeps_partial_results(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    data = (CAPTURES / "fio-iodepth8.pcap").read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    proc = nbdscope("analyze", "--format", "json", str(cut))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "truncated" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    rep = json.loads(proc.stdout)
    reads = sum(s["commands"].get("NBD_CMD_READ", {}).get("count", 0) for s in rep["sessions"])
    assert reads > 10 and rep["capture_problems"]


def test_rules_catalog_has_the_contract_ids() -> None:
    rules = json.loads(nbdscope("rules", "--format", "json").stdout)
    ids = {r["id"] for r in rules}
    assert ids >= {"cache-flag-mismatch", "unaligned-extent", "size-not-block-multiple", "unaligned-request",
                   "request-beyond-export", "payload-too-large", "command-not-advertised", "flag-not-advertised",
                   "write-to-read-only", "multi-conn-without-flag", "cookie-reuse", "unmatched-reply",
                   "structured-reply-not-negotiated", "simple-reply-to-structured-read", "bad-reply-chunk",
                   "reserved-bits-set", "unknown-command", "option-protocol", "hard-disconnect", "capture-gap",
                   "stale-read", "tls-protocol"}
    assert len(ids) == len(rules)  # one entry per id
    assert all(r["severity"] in ("error", "warning", "info") and r["spec"] and r["summary"] for r in rules)


def test_a_finding_reads_the_same_on_the_console_and_in_jsonl() -> None:
    """analyze, live and the proxy print findings through one pair of helpers: the console
    line names rule, severity, blame, session and frame; the JSONL line is the docs/CONTRACT.md record."""
    import json

    from nbdscope.analysis.anomaly import Anomaly
    from nbdscope.report.records import anomaly_json
    from nbdscope.report.timeline import anomaly_line

    a = Anomaly(rule="unaligned-extent", severity="warning", blame="server", session="s2", frame=31, time=0.25,
                message="extent of 1000 bytes", spec="Size constraints")
    assert anomaly_line(a) == "ANOMALY warning unaligned-extent blame=server s2 frame 31: extent of 1000 bytes"
    record = json.loads(anomaly_json(a))
    assert anomaly_json(a).endswith(b"\n") and anomaly_json(a).count(b"\n") == 1
    assert {k: record[k] for k in ("type", "rule", "severity", "blame", "session", "frame", "message", "spec")} == {
        "type": "ANOMALY", "rule": "unaligned-extent", "severity": "warning", "blame": "server", "session": "s2",
        "frame": 31, "message": "extent of 1000 bytes", "spec": "Size constraints"}
