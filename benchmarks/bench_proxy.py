#!/usr/bin/env python3
"""nbdscope proxy against a direct connection and against nbdkit's nbd plugin used
as a relay, in one run on loopback: nbdcopy reading and writing SIZE with 4
connections (nbdkit memory server), and fio's nbd engine at 4k random reads with
iodepth 1 and 16. The proxy runs with live decoding and a JSONL log on.

Besides time and IOPS it prints the CPU seconds each relay used per row (the proxy's
relay and watcher processes together), which on a small shared machine says more
than wall time: client, server and relay all compete for the same cores.

A shared virtual machine is noisy (the same row varies by a third from one run to
the next), so every relay is measured in several rounds, taken in turn and in a
rotating order, and the table shows the median with the range beside it.

    python3 benchmarks/bench_proxy.py [--size 1G] [--fio-seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.live import free_port, process, run  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """User plus system time of these processes and of their children, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        kids = Path(f"/proc/{pid}/task/{pid}/children")
        for p in [pid, *(int(k) for k in kids.read_text().split())] if kids.exists() else [pid]:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextmanager
def relay(kind: str, upstream: int, work: Path) -> Iterator[tuple[int, list[int]]]:
    """Yields the port clients should use (the server itself, nbdscope proxy, or nbdkit nbd)
    and the relay's process ids."""
    if kind == "direct":
        yield upstream, []
        return
    port = free_port()
    if kind in ("nbdscope", "nbdscope-pure"):
        pure = ["env", "NBDSCOPE_PURE=1"] if kind == "nbdscope-pure" else []  # (env execs: the same pid)
        cmd = [*pure, sys.executable, "-m", "nbdscope", "proxy", "--listen", f"127.0.0.1:{port}", "--upstream",
               f"127.0.0.1:{upstream}", "--quiet", "--jsonl", str(work / "proxy.jsonl")]
    else:
        cmd = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "nbd", f"uri=nbd://127.0.0.1:{upstream}"]
    with process(cmd, port=port) as proc:
        yield port, [proc.pid]


def nbdcopy(args: list[str]) -> float:
    start = time.monotonic()
    run(["nbdcopy", "--connections=4", "--threads=4", *args], timeout=600)
    return time.monotonic() - start


def fio(port: int, iodepth: int, seconds: int) -> tuple[float, float]:
    out = run(["fio", "--name=bench", "--ioengine=nbd", f"--uri=nbd://127.0.0.1:{port}", "--rw=randread",
               "--bs=4k", f"--iodepth={iodepth}", "--size=256M", "--time_based", f"--runtime={seconds}",
               "--output-format=json"], timeout=seconds + 60)
    job = json.loads(out[out.index("{"):])["jobs"][0]["read"]
    return job["iops"], job["lat_ns"]["mean"] / 1000


def measure(port: int, src: str, pids: list[int], seconds: int, fio_rows: bool = True) -> dict[str, float]:
    """Every row through one relay (the nbdcopy rows alone without ``fio_rows``), with the relay's CPU time
    for each."""
    uri = f"nbd://127.0.0.1:{port}"
    r: dict[str, float] = {}
    mark = cpu_seconds(pids)

    def cpu() -> float:
        nonlocal mark
        used, mark = cpu_seconds(pids) - mark, cpu_seconds(pids)
        return used

    r["write_s"] = nbdcopy([src, uri])
    r["write_cpu"] = cpu()
    r["read_s"] = nbdcopy([uri, "null:"])
    r["read_cpu"] = cpu()
    for qd in (1, 16) if fio_rows else ():
        r[f"qd{qd}_iops"], r[f"qd{qd}_lat_us"] = fio(port, qd, seconds)
        r[f"qd{qd}_cpu"] = cpu()
    return r


ROWS = (("read_s", "nbdcopy read {size} (s)", True), ("write_s", "nbdcopy write {size} (s)", True),
        ("qd1_iops", "fio 4k randread QD1 IOPS", False), ("qd1_lat_us", "  mean latency (us)", True),
        ("qd16_iops", "fio 4k randread QD16 IOPS", False), ("qd16_lat_us", "  mean latency (us)", True))
KINDS = ("direct", "nbdkit-nbd", "nbdscope")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G")
    p.add_argument("--fio-seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="measurements of every relay (median shown)")
    p.add_argument("--pure", action="store_true", help="also the proxy on the pure-Python path (NBDSCOPE_PURE=1)")
    p.add_argument("--rows", choices=("all", "nbdcopy"), default="all",
                   help="nbdcopy: only the copy rows (more rounds in the same time, for the noisy read row)")
    args = p.parse_args()
    kinds = (*KINDS, "nbdscope-pure") if args.pure else KINDS
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up = free_port()
        with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", args.size], port=up):
            src = work / "src.raw"
            run(["nbdcopy", "--", "[", "nbdkit", "pattern", args.size, "]", str(src)], timeout=600)
            for n in range(max(1, args.rounds)):
                for kind in kinds[n % len(kinds):] + kinds[:n % len(kinds)]:  # no relay always goes first
                    with relay(kind, up, work) as (port, pids):
                        r = measure(port, str(src), pids, args.fio_seconds, fio_rows=args.rows == "all")
                    runs[kind].append(r)
                    print(f"round {n + 1} {kind}: {r}", flush=True)
    med = {kind: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for kind, rs in runs.items()}

    def spread(kind: str, key: str) -> str:
        values = [r[key] for r in runs[kind]]
        return f"{min(values):.0f}-{max(values):.0f}" if max(values) >= 100 else f"{min(values):.2f}-{max(values):.2f}"

    d, n, s = med["direct"], med["nbdkit-nbd"], med["nbdscope"]
    print(f"\nmedians of {len(runs['direct'])} rounds (range in brackets)")
    print(f"{'':<28}{'direct':>10}{'nbdkit nbd':>24}{'nbdscope':>24}{'nbdscope vs nbdkit':>20}")
    ratios = []
    for key, label, better_low in ROWS:
        if key not in n:
            continue  # (--rows nbdcopy)
        ratio = n[key] / s[key] if better_low else s[key] / n[key]
        ratios.append(ratio)
        print(f"{label.format(size=args.size):<28}{d[key]:>10.2f}{n[key]:>10.2f} [{spread('nbdkit-nbd', key):>11}]"
              f"{s[key]:>10.2f} [{spread('nbdscope', key):>11}]{ratio:>19.2f}x")
    print(f"\n{'relay CPU seconds per row':<28}{'nbdkit nbd':>22}{'nbdscope':>10}{'nbdscope / nbdkit':>20}")
    for row in [row for row in ("read", "write", "qd1", "qd16") if row + "_cpu" in n]:
        print(f"{row:<28}{n[row + '_cpu']:>22.2f}{s[row + '_cpu']:>10.2f}{s[row + '_cpu'] / n[row + '_cpu']:>19.2f}x")
    if args.pure:
        q = med["nbdscope-pure"]
        print(f"\n{'pure-Python path':<28}{'nbdscope-pure':>22}{'vs nbdkit':>12}{'CPU vs nbdkit':>16}")
        for key, label, better_low in [row for row in ROWS if row[0] in n]:
            ratio = n[key] / q[key] if better_low else q[key] / n[key]
            print(f"{label.format(size=args.size):<28}{q[key]:>10.2f} [{spread('nbdscope-pure', key):>11}]"
                  f"{ratio:>11.2f}x")
        for row in [row for row in ("read", "write", "qd1", "qd16") if row + "_cpu" in n]:
            print(f"{row + ' CPU s':<28}{q[row + '_cpu']:>10.2f}{'':>26}{q[row + '_cpu'] / n[row + '_cpu']:>15.2f}x")
    met = all(r >= 1.0 for r in ratios)
    print(f"\ntarget (nbdscope proxy at least as fast as the nbdkit nbd plugin on every row, medians): "
          f"{'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
