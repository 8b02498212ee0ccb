#!/usr/bin/env python3
"""What the Lua plugin costs Wireshark: tshark with dissectors/nbdscope.lua against
plain tshark on the same capture (by default the 1 GiB loopback capture of
bench_analyze.py, made here if missing), in one run.

Three workloads, each timed with and without the plugin (best of --runs):

- read:   `tshark -r FILE` with its one-line summary, what opening a file costs;
- fields: `tshark -r FILE -Y <proto> -T fields ...`, every frame with NBD as a row
          (plain tshark uses its built-in `nbd` fields, the plugin `nbdscope.*`);
- verbose: `tshark -r FILE -V`, the full tree of every packet (the plugin's
          worst case: every bit of every flags field and every extent is built).

Prints wall time, peak RSS and the slowdown ratio; never asserts a time.

Run as root (only to make the capture): python3 benchmarks/bench_plugin.py [--capture FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_analyze  # noqa: E402
from bench_analyze import capture_loopback, measure, size_arg  # noqa: E402

from tests.live import free_port  # noqa: E402

PLUGIN = ROOT / "dissectors" / "nbdscope.lua"
WORKLOADS = {
    "read": ([], []),
    "fields": (["-Y", "nbd", "-T", "fields", "-e", "nbd.type", "-e", "nbd.handle", "-e", "nbd.from", "-e", "nbd.len"],
               ["-Y", "nbdscope", "-T", "fields", "-e", "nbdscope.msgtype", "-e", "nbdscope.cookie",
                "-e", "nbdscope.offset", "-e", "nbdscope.length"]),
    "verbose": (["-V"], ["-V"]),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capture", type=Path, help="capture to use (default: make or reuse the loopback one)")
    p.add_argument("--size", type=size_arg, default=size_arg("1G"))
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nbdscope-bench"))
    p.add_argument("--workloads", default="read,fields,verbose")
    p.add_argument("--rate", default=bench_analyze.RATE, help="nbdkit rate filter pacing (bits/s) when capturing")
    p.add_argument("--regenerate", action="store_true")
    args = p.parse_args()
    tshark = shutil.which("tshark")
    if tshark is None:
        print("missing tshark (scripts/install-deps.sh installs it)", file=sys.stderr)
        return 2
    capture = args.capture or args.workdir / f"{args.size >> 20}M-loopback.pcap"
    if args.regenerate and not args.capture:
        capture.unlink(missing_ok=True)
    if not capture.exists():
        if args.capture:
            print(f"{capture}: no such file", file=sys.stderr)
            return 2
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(f"capturing {capture} ...", flush=True)
        # a free port rather than 10809, which tests running beside us may use; both tshark
        # dissectors find NBD on any port by its magic
        bench_analyze.PORT, bench_analyze.RATE = free_port(), args.rate
        capture_loopback(capture, args.size)
    rows = []
    for name in args.workloads.split(","):
        plain_args, plugin_args = WORKLOADS[name]
        # loopback captures hold segments out of order now and then (tcpdump sees them from two
        # CPUs); Wireshark reassembles across them only with this preference, for either dissector
        common = [tshark, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(capture)]
        plain = [*common, *plain_args]
        with_plugin = [*common, "-X", f"lua_script:{PLUGIN}", *plugin_args]
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(args.runs):  # interleaved, so the page cache favours neither
            for label, cmd in (("plain", plain), ("plugin", with_plugin)):
                wall, rss, out = measure(cmd)
                lines = out.count(b"\n")
                if label not in best or wall < best[label][0]:
                    best[label] = (wall, rss, lines)
        rows.append({"workload": name, "plain_s": best["plain"][0], "plain_rss_mb": best["plain"][1],
                     "plain_lines": best["plain"][2], "plugin_s": best["plugin"][0],
                     "plugin_rss_mb": best["plugin"][1], "plugin_lines": best["plugin"][2],
                     "slowdown": best["plugin"][0] / best["plain"][0]})
    print(f"\n{capture} ({capture.stat().st_size / 1e6:.0f} MB); best of {args.runs}\n")
    head = f"{'workload':<10}{'plain s':>9}{'plugin s':>10}{'ratio':>8}{'plain MB':>10}{'plugin MB':>11}" \
           f"{'plain lines':>13}{'plugin lines':>14}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['workload']:<10}{r['plain_s']:>9.2f}{r['plugin_s']:>10.2f}{r['slowdown']:>7.2f}x"
              f"{r['plain_rss_mb']:>10.0f}{r['plugin_rss_mb']:>11.0f}{r['plain_lines']:>13}{r['plugin_lines']:>14}")
    (args.workdir / "plugin-results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
