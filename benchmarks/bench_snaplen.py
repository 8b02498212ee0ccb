#!/usr/bin/env python3
"""A header-only capture against the same capture whole.

Cuts a capture to SNAP bytes a packet with `editcap -s` (as `tcpdump -s 128` would have captured it),
then times `nbdscope analyze --format json` on both, and `tshark -r F -Y nbd` on both as the reference
in the same run, alternating the order over several rounds; prints medians of wall time, CPU time and
peak RSS and the ratios cut / whole. It checks that the cut capture reports the same requests per
command as the whole one (the headers are all there), so the cut run is not timed doing less work.

The capture is --capture FILE, or (as root, the default) nbdcopy reading --size bytes from nbdkit's
pattern plugin over loopback, made as bench_analyze.py makes it and kept in --workdir.

    sudo python3 benchmarks/bench_snaplen.py [--size 1G] [--snap 128] [--rounds 5]
    python3 benchmarks/bench_snaplen.py --capture /tmp/nbdscope-bench/1024M-loopback.pcap
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import Timed, size_arg, timed
from bench_rotation import given_or_made, summary


def requests(report: bytes) -> list[object]:
    """Per session: the endpoints and (command, count) pairs, which a header-only capture must keep."""
    out = []
    for s in json.loads(report)["sessions"]:
        counts = sorted((k, v["count"]) for k, v in s["commands"].items())
        out.append((s["client"], s["server"], counts))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capture", type=Path, help="capture to cut (default: make one, needs root)")
    p.add_argument("--size", type=size_arg, default=size_arg("1G"), help="bytes nbdcopy reads for the capture made")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nbdscope-bench"))
    p.add_argument("--snap", type=int, default=128, help="bytes kept of each packet")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    for tool in ("editcap", "tshark"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_snaplen: {tool} (wireshark) is needed")
    capture = given_or_made(args.capture, args.workdir, args.size)
    nbdscope = [sys.executable, "-m", "nbdscope", "analyze", "--format", "json"]
    with tempfile.TemporaryDirectory(prefix="nbdscope-snaplen-") as tmp:
        cut = Path(tmp) / "cut.pcap"
        subprocess.run(["editcap", "-F", "pcap", "-s", str(args.snap), str(capture), str(cut)], check=True,
                       capture_output=True)
        print(f"{capture}: {capture.stat().st_size >> 20} MiB whole, {cut.stat().st_size >> 10} KiB cut to "
              f"{args.snap} bytes a packet; {args.rounds} rounds")
        runs: dict[str, list[Timed]] = {k: [] for k in ("nbdscope whole", "nbdscope cut", "tshark whole", "tshark cut")}
        cmds = {"nbdscope whole": [*nbdscope, str(capture)], "nbdscope cut": [*nbdscope, str(cut)],
                "tshark whole": ["tshark", "-r", str(capture), "-Y", "nbd"],
                "tshark cut": ["tshark", "-r", str(cut), "-Y", "nbd"]}
        names = list(cmds)
        for n in range(args.rounds):
            for name in names if n % 2 == 0 else reversed(names):
                runs[name].append(timed(cmds[name], keep_output=name.startswith("nbdscope")))
        whole_reqs, cut_reqs = requests(runs["nbdscope whole"][0].out), requests(runs["nbdscope cut"][0].out)
        if whole_reqs != cut_reqs:  # a header beyond the snapshot length is lost, as it would be on the wire
            print("note: some request headers lay beyond the snapshot length; the cut capture has fewer requests")
    got = {name: summary(name, r) for name, r in runs.items()}
    for tool in ("nbdscope", "tshark"):
        w, c = got[f"{tool} whole"], got[f"{tool} cut"]
        print(f"{tool}: cut / whole  wall {c[0] / w[0]:.3f}  cpu {c[1] / w[1]:.3f}  peak RSS {c[2] / w[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
