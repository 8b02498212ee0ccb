#!/usr/bin/env python3
"""Can `nbdscope live` keep up? nbdcopy reads SIZE from nbdkit over loopback at a
paced RATE while `nbdscope live -i lo` decodes from tcpdump's pipe; every read
request and its reply must come out decoded, and drops tcpdump reports are shown.

Run as root: python3 benchmarks/bench_live.py [--size 1G] [--rate 1G]
(rate in bits per second, nbdkit's rate filter: 1G is 125 MB/s)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.live import free_port, process, run  # noqa: E402

NBDSCOPE = str(ROOT / ".venv" / "bin" / "nbdscope")
REQUEST = 256 * 1024  # nbdcopy's default request size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1G")
    p.add_argument("--rate", default="1G")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (tcpdump)")
    size = int(args.size[:-1]) << {"K": 10, "M": 20, "G": 30}[args.size[-1].upper()]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "live.jsonl", Path(tmp) / "live.err"
        with open(err, "w") as errf:
            live = subprocess.Popen([NBDSCOPE, "live", "-i", "lo", "--filter", f"tcp port {port}", "--format",
                                     "jsonl", "-o", str(out), "--buffer", "262144"], stderr=errf)
        try:
            deadline = time.monotonic() + 15
            while "capturing on" not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=rate", "pattern", args.size,
                      f"rate={args.rate}"]
            with process(server, port=port):
                t = time.perf_counter()
                run(["nbdcopy", "--connections=1", f"nbd://127.0.0.1:{port}", "null:"], timeout=600)
                copy_s = time.perf_counter() - t
            time.sleep(1.0)
            live.send_signal(signal.SIGINT)
            live.wait(60)
        finally:
            if live.poll() is None:
                live.kill()
                live.wait(5)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        reads = sum(1 for r in records if r["type"] == "NBD_CMD_READ")
        replies = sum(1 for r in records if r.get("command") == "NBD_CMD_READ" and r["type"] != "NBD_CMD_READ"
                      and r.get("completes", True))
        gaps = sum(1 for r in records if r["type"] == "CAPTURE_GAP")
        expected = size // REQUEST
        print(f"nbdcopy read {size / 2**30:.2f} GiB in {copy_s:.2f} s ({size / copy_s / 1e6:.0f} MB/s) through "
              f"loopback while nbdscope live decoded: {reads} of {expected} read requests, {replies} completed "
              f"replies, {gaps} capture gaps, {len(records)} messages")
        print("nbdscope live said:", err.read_text().strip().splitlines()[-1])
    return 0 if reads == expected and replies == expected else 1


if __name__ == "__main__":
    sys.exit(main())
