#!/usr/bin/env python3
"""nbdscope analyze against tshark on big NBD captures, in one run.

Makes two captures of nbdcopy reading SIZE bytes from nbdkit's pattern plugin
(paced at 1 Gbit/s so that tcpdump keeps every packet):
over loopback (64 KiB segments), and across a veth pair with MTU 1500 and
offloads off between two network namespaces this script creates (about 750,000
frames per GiB). Then times `nbdscope analyze --format json` and
`tshark -Y nbd -T fields ...` on each, reporting wall time, peak RSS and how
many NBD messages each decoded, with the ratios.

Run as root: python3 benchmarks/bench_analyze.py [--size 1G] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.live import process, run, tcpdump  # noqa: E402

NS_SRV, NS_CLI = "nbdbench-srv", "nbdbench-cli"
SRV_IP, CLI_IP = "10.254.0.1", "10.254.0.2"  # exist only inside the two namespaces made here
PORT = 10809
# tcpdump cannot write a 1 GiB loopback burst to disk without the kernel dropping packets,
# so the server is paced (nbdkit's rate filter, in bits per second) and one connection is used
RATE = "1G"
TSHARK = ["tshark", "-r", "{file}", "-Y", "nbd", "-T", "fields", "-e", "nbd.type", "-e", "nbd.handle",
          "-e", "nbd.from", "-e", "nbd.len"]


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def capture_loopback(out: Path, size: int) -> None:
    server = ["nbdkit", "-f", "-p", str(PORT), "-i", "127.0.0.1", "--filter=rate", "pattern", str(size),
              f"rate={RATE}"]
    with process(server, port=PORT), tcpdump(out, PORT, buffer_kib=262144, immediate=False):
        run(["nbdcopy", "--connections=1", f"nbd://127.0.0.1:{PORT}", "null:"], timeout=300)


def _ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def _teardown_namespaces() -> None:
    for ns in (NS_SRV, NS_CLI):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def capture_veth(out: Path, size: int) -> None:
    _teardown_namespaces()
    try:
        for cmd in (["ip", "netns", "add", NS_SRV], ["ip", "netns", "add", NS_CLI],
                    ["ip", "link", "add", "nbdb-s", "netns", NS_SRV, "type", "veth", "peer", "name", "nbdb-c",
                     "netns", NS_CLI],
                    _ns(NS_SRV, "ip", "addr", "add", f"{SRV_IP}/30", "dev", "nbdb-s"),
                    _ns(NS_CLI, "ip", "addr", "add", f"{CLI_IP}/30", "dev", "nbdb-c"),
                    _ns(NS_SRV, "ip", "link", "set", "nbdb-s", "up", "mtu", "1500"),
                    _ns(NS_CLI, "ip", "link", "set", "nbdb-c", "up", "mtu", "1500"),
                    _ns(NS_SRV, "ethtool", "-K", "nbdb-s", "tso", "off", "gso", "off", "gro", "off"),
                    _ns(NS_CLI, "ethtool", "-K", "nbdb-c", "tso", "off", "gso", "off", "gro", "off")):
            run(cmd)
        server = _ns(NS_SRV, "nbdkit", "-f", "-p", str(PORT), "-i", SRV_IP, "--filter=rate", "pattern", str(size),
                     f"rate={RATE}")
        with process(server, port=PORT, netns=NS_SRV), \
                tcpdump(out, PORT, iface="nbdb-s", netns=NS_SRV, buffer_kib=262144, immediate=False):
            run(_ns(NS_CLI, "nbdcopy", "--connections=1", f"nbd://{SRV_IP}:{PORT}", "null:"), timeout=300)
    finally:
        _teardown_namespaces()


def measure(cmd: list[str]) -> tuple[float, float, bytes]:
    """Wall seconds, peak RSS in MB and stdout of one child process."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nbdscope-bench-{os.getpid()}.out"
    with open(out_path, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    data = out_path.read_bytes()
    out_path.unlink()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed with {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, data


def bench(capture: Path, runs: int, size: int) -> dict[str, object]:
    frames = int(run(["capinfos", "-c", "-M", "-T", str(capture)]).splitlines()[-1].split("\t")[-1])
    ours, theirs = [], []
    messages = tshark_lines = 0
    for _ in range(runs):
        wall, rss, out = measure([sys.executable, "-m", "nbdscope", "analyze", "--format", "json", str(capture)])
        report = json.loads(out)
        messages = sum(s["messages"] for s in report["sessions"])
        read = sum(s["commands"].get("NBD_CMD_READ", {}).get("bytes", 0) for s in report["sessions"])
        ours.append((wall, rss))
        wall, rss, out = measure([a.replace("{file}", str(capture)) for a in TSHARK])
        tshark_lines = out.count(b"\n")
        theirs.append((wall, rss))
    best_ours, best_theirs = min(ours), min(theirs)
    return {"capture": capture.name, "frames": frames, "bytes": capture.stat().st_size,
            "nbdscope_s": best_ours[0], "nbdscope_rss_mb": max(r for _, r in ours), "nbdscope_messages": messages,
            "read_bytes_decoded": read, "complete": read == size,
            "tshark_s": best_theirs[0], "tshark_rss_mb": max(r for _, r in theirs), "tshark_messages": tshark_lines,
            "speedup": best_theirs[0] / best_ours[0], "rss_ratio": max(r for _, r in theirs) / max(r for _, r in ours)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=size_arg, default=size_arg("1G"))
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nbdscope-bench"))
    p.add_argument("--regenerate", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("run as root: tcpdump and network namespaces need it", file=sys.stderr)
        return 2
    for tool in ("nbdkit", "nbdcopy", "tcpdump", "tshark", "capinfos", "ethtool", "ip"):
        if shutil.which(tool) is None:
            print(f"missing {tool} (scripts/install-deps.sh installs it)", file=sys.stderr)
            return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, make in (("loopback.pcap", capture_loopback), ("veth1500.pcap", capture_veth)):
        path = args.workdir / f"{args.size >> 20}M-{name}"
        if args.regenerate or not path.exists():
            print(f"capturing {path} ...", flush=True)
            make(path, args.size)
        rows.append(bench(path, args.runs, args.size))
    print(f"\nnbdcopy reading {args.size >> 20} MiB from nbdkit pattern; best of {args.runs} runs\n")
    head = f"{'capture':<22}{'frames':>9}{'MB':>7}  {'tool':<9}{'wall s':>8}{'peak MB':>9}{'messages':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mb = r["bytes"] / 1e6  # type: ignore[operator]
        print(f"{r['capture']:<22}{r['frames']:>9}{mb:>7.0f}  {'nbdscope':<9}{r['nbdscope_s']:>8.2f}"
              f"{r['nbdscope_rss_mb']:>9.0f}{r['nbdscope_messages']:>10}")
        print(f"{'':<38}{'tshark':<9}{r['tshark_s']:>8.2f}{r['tshark_rss_mb']:>9.0f}{r['tshark_messages']:>10}")
        print(f"{'':<38}ratio: nbdscope {r['speedup']:.1f}x faster, {r['rss_ratio']:.1f}x less memory; "
              f"all data decoded: {r['complete']}")
    met = all(r["speedup"] >= 4 and r["nbdscope_rss_mb"] < 150 for r in rows)  # type: ignore[operator]
    print(f"\ntarget (>= 4x faster than tshark, peak RSS < 150 MB on both): {'met' if met else 'NOT met'}")
    (args.workdir / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
