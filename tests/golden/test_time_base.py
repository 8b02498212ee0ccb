"""One time base: every relative time nbdscope writes counts from the first packet of the input, the
origin tshark's ``frame.time_relative`` uses (tshark is the oracle), whatever that first packet carries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
SHIPPED = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")


def _tshark_relative(capture: Path) -> dict[int, float]:
    out = subprocess.run(["tshark", "-r", str(capture), "-T", "fields", "-e", "frame.number",
                          "-e", "frame.time_relative"], capture_output=True, text=True, timeout=120, check=True)
    return {int(n): float(t) for n, t in (line.split("\t") for line in out.stdout.splitlines())}


@pytest.mark.parametrize("capture", SHIPPED, ids=[p.name for p in SHIPPED])
def test_message_times_are_tsharks_relative_times(capture: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", str(capture), "--format", "jsonl"],
                          capture_output=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    messages = [m for m in lines if "frame" in m and "time" in m and "type" in m]
    assert messages, "no messages decoded"
    want = _tshark_relative(capture)
    for m in messages:
        assert m["time"] == pytest.approx(want[m["frame"]], abs=1.5e-6), (m["frame"], m["type"])
