#!/usr/bin/env python3
"""A rotating capture set against the same capture as one file.

Splits a capture into PIECES files with `editcap -c` (as `tcpdump -C/-W` leaves a ring behind), then
times `nbdscope analyze --format json` on the whole file and on the set (the files given in shuffled
order), alternating which goes first over several rounds, and prints the median wall time, CPU time and
peak RSS of each and their ratios. It checks that both runs report the same sessions and per-command
tables, so the set is not timed doing less work.

The capture is --capture FILE, or (as root, the default) nbdcopy reading --size bytes from nbdkit's
pattern plugin over loopback, captured with tcpdump as bench_analyze.py does it and kept in --workdir.

    sudo python3 benchmarks/bench_rotation.py [--size 256M] [--pieces 4] [--rounds 5]
    python3 benchmarks/bench_rotation.py --capture captures/nbdcopy-4conn-nbdkit-memory.pcap
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import Timed, capture_loopback, size_arg, timed


def packets(path: Path) -> int:
    out = subprocess.run(["capinfos", "-M", "-c", str(path)], check=True, capture_output=True, text=True).stdout
    return int(next(line for line in out.splitlines() if "Number of packets" in line).split(":")[1].split()[0])


def split(path: Path, pieces: int, where: Path) -> list[str]:
    per = -(-packets(path) // pieces)
    # classic pcap, as tcpdump writes its ring (editcap's default, pcapng, would take the slower general path)
    subprocess.run(["editcap", "-F", "pcap", "-c", str(per), str(path), str(where / "ring.pcap")], check=True,
                   capture_output=True)
    return sorted(str(p) for p in where.iterdir())


def given_or_made(capture: Path | None, workdir: Path, size: int) -> Path:
    """The capture named, or nbdcopy reading ``size`` bytes over loopback, made once in ``workdir``."""
    if capture is not None:
        return capture
    workdir.mkdir(parents=True, exist_ok=True)
    made = workdir / f"{size >> 20}M-loopback.pcap"
    if not made.exists():
        print(f"capturing {made} ...", flush=True)
        capture_loopback(made, size)
    return made


def comparable(report: bytes) -> list[object]:
    return [(s["client"], s["server"], s["messages"], s["commands"]) for s in json.loads(report)["sessions"]]


def summary(label: str, runs: list[Timed]) -> tuple[float, float, float]:
    wall = statistics.median(t.wall for t in runs)
    cpu = statistics.median(t.cpu for t in runs)
    rss = statistics.median(t.rss_mb for t in runs)
    walls = ", ".join(f"{t.wall:.2f}" for t in runs)
    print(f"{label:<14} wall {wall:7.2f} s  cpu {cpu:7.2f} s  peak RSS {rss:7.1f} MB   (walls: {walls})")
    return wall, cpu, rss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capture", type=Path, help="capture to split (default: make one, needs root)")
    p.add_argument("--size", type=size_arg, default=size_arg("256M"), help="bytes nbdcopy reads for the capture made")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nbdscope-bench"))
    p.add_argument("--pieces", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    for tool in ("editcap", "capinfos"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_rotation: {tool} (wireshark-common) is needed")
    capture = given_or_made(args.capture, args.workdir, args.size)
    nbdscope = [sys.executable, "-m", "nbdscope", "analyze", "--format", "json"]
    with tempfile.TemporaryDirectory(prefix="nbdscope-rotation-") as tmp:
        files = split(capture, args.pieces, Path(tmp))
        given = list(files)
        random.Random(1).shuffle(given)
        print(f"{capture}: {packets(capture)} packets, {capture.stat().st_size >> 20} MiB, "
              f"as {len(files)} files; {args.rounds} rounds")
        whole: list[Timed] = []
        pieces: list[Timed] = []
        for n in range(args.rounds):
            order = [(whole, [str(capture)]), (pieces, given)]
            for runs, inputs in order if n % 2 == 0 else reversed(order):
                runs.append(timed([*nbdscope, *inputs]))
        if comparable(whole[0].out) != comparable(pieces[0].out):
            sys.exit("bench_rotation: the set and the whole capture report different sessions")
    w = summary("one file", whole)
    s = summary(f"{len(files)} files", pieces)
    print(f"ratio (set / one file): wall {s[0] / w[0]:.3f}  cpu {s[1] / w[1]:.3f}  peak RSS {s[2] / w[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
