"""Absolute times and connections in the JSONL lines against tshark, the oracle: every ``epoch`` is
tshark's ``frame.time_epoch`` of the frame, the summary's ``t0`` is the first packet's, and each SESSION
line's endpoints are those of the TCP stream (``tcp.stream``) that holds its first frame, the client
being the side that sent the SYN."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
SHIPPED = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")

FIELDS = ("frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst",
          "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack")


@cache
def _tshark(capture: Path) -> dict[int, dict[str, str]]:
    """Per frame number, the fields above as tshark prints them."""
    args = ["tshark", "-r", str(capture), "-T", "fields", "-E", "occurrence=f"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]
    return {int(r["frame.number"]): r for r in rows}


@cache
def _jsonl(capture: Path) -> list[dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", str(capture), "--format", "jsonl"],
                          capture_output=True, timeout=120, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def _endpoint(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.mark.parametrize("capture", SHIPPED, ids=[p.name for p in SHIPPED])
def test_epochs_are_tsharks_frame_times(capture: Path) -> None:
    frames = _tshark(capture)
    lines = _jsonl(capture)
    timed = [r for r in lines if "frame" in r and "epoch" in r and r["type"] != "ANOMALY"]
    assert len(timed) > 3
    for r in timed:
        assert r["epoch"] == pytest.approx(float(frames[r["frame"]]["frame.time_epoch"]), abs=1.5e-6), r
    summary = lines[-1]
    assert summary["type"] == "SUMMARY"
    assert summary["t0"]["epoch"] == pytest.approx(float(frames[1]["frame.time_epoch"]), abs=1.5e-6)


@pytest.mark.parametrize("capture", SHIPPED, ids=[p.name for p in SHIPPED])
def test_session_endpoints_are_tsharks_tcp_streams(capture: Path) -> None:
    frames = _tshark(capture)
    sessions = [r for r in _jsonl(capture) if r["type"] == "SESSION"]
    assert sessions
    streams = set()
    for s in sessions:
        stream = frames[s["first_frame"]]["tcp.stream"]  # type: ignore[index]
        streams.add(stream)
        packets = [f for f in frames.values() if f["tcp.stream"] == stream]
        ends = {_endpoint(f["ip.src"] or f["ipv6.src"], f["tcp.srcport"]) for f in packets} | \
               {_endpoint(f["ip.dst"] or f["ipv6.dst"], f["tcp.dstport"]) for f in packets}
        assert ends == {s["client"], s["server"]}, s
        syn = next((f for f in packets if f["tcp.flags.syn"] in ("1", "True") and f["tcp.flags.ack"] in ("0", "False")),
                   None)
        if syn is not None:
            assert _endpoint(syn["ip.src"] or syn["ipv6.src"], syn["tcp.srcport"]) == s["client"], s
    assert len(streams) == len(sessions), "two sessions in one TCP stream"
