#!/usr/bin/env python3
"""nbdscope analyze against tshark on NBD captures, in one run.

Bulk: two captures of nbdcopy reading SIZE bytes from nbdkit's pattern plugin
(paced at 1 Gbit/s so that tcpdump keeps every packet): over loopback (64 KiB
segments), and across a veth pair with MTU 1500 and offloads off between two
network namespaces this script creates (about 750,000 frames per GiB). Times
`nbdscope analyze --format json` and `tshark -Y nbd -T fields ...` on each.

Small messages: fio's nbd engine doing NUMBER_IOS 4k random reads at iodepth 16
against `nbdkit memory` on loopback, so the cost per message and not per byte
dominates. nbdkit runs with --no-sr unless --structured-replies: tshark 4.0 does
not dissect structured replies and would then decode only the requests. Times
nbdscope (json, jsonl, json --verify-data) and tshark (plain -Y nbd, -T fields) over several rounds
in rotating order and prints medians, ranges and microseconds per message.

Run as root: python3 benchmarks/bench_analyze.py [--size 1G] [--runs 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

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
TSHARK_PLAIN = ["tshark", "-r", "{file}", "-Y", "nbd"]  # the summary line of every NBD frame
RUN_LIMIT = 900  # seconds any one timed child may take before it is killed
SMALL_BS = 4096
SMALL_MIN_MESSAGES = 300_000  # the workload is meant to be dominated by per-message cost


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


class Timed(NamedTuple):
    wall: float  # seconds
    cpu: float  # user + system seconds: on a busy machine steadier than the wall time
    rss_mb: float  # peak
    out: bytes


def timed(cmd: list[str], keep_output: bool = True) -> Timed:
    """One child process, measured from wait4; its stdout is b"" when it went to
    /dev/null. A child still running after RUN_LIMIT is killed."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nbdscope-bench-{os.getpid()}.out"
    with open(out_path if keep_output else os.devnull, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > RUN_LIMIT:
                proc.kill()  # our own child, by its pid
            time.sleep(0.005)
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    data = out_path.read_bytes() if keep_output else b""
    if keep_output:
        out_path.unlink()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed with {proc.returncode}")
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, data)


def measure(cmd: list[str]) -> tuple[float, float, bytes]:
    """Wall seconds, peak RSS in MB and stdout of one child process."""
    t = timed(cmd)
    return t.wall, t.rss_mb, t.out


def tshark_messages(fields_output: bytes) -> int:
    """NBD messages in `-T fields` output: a frame holding several gives one line with
    comma-separated values, so the handles (column 2) are counted, not the lines."""
    count = 0
    for line in fields_output.splitlines():
        cols = line.split(b"\t")
        if len(cols) > 1 and cols[1]:
            count += cols[1].count(b",") + 1
    return count


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
        tshark_lines = tshark_messages(out)
        theirs.append((wall, rss))
    best_ours, best_theirs = min(ours), min(theirs)
    return {"capture": capture.name, "frames": frames, "bytes": capture.stat().st_size,
            "nbdscope_s": best_ours[0], "nbdscope_rss_mb": max(r for _, r in ours), "nbdscope_messages": messages,
            "read_bytes_decoded": read, "complete": read == size,
            "tshark_s": best_theirs[0], "tshark_rss_mb": max(r for _, r in theirs), "tshark_messages": tshark_lines,
            "speedup": best_theirs[0] / best_ours[0], "rss_ratio": max(r for _, r in theirs) / max(r for _, r in ours)}


# ------------------------------------------------------------------ small messages

def _port() -> int:
    """10809 when it is free (the port both tools know), else any free one: tshark 4.0
    finds NBD heuristically on any port and nbdscope detects it from the first bytes."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", PORT))
            return PORT
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def capture_small(out: Path, number_ios: int, structured: bool, rate_iops: int, max_seconds: int) -> None:
    """fio paced at RATE_IOPS: unpaced, tcpdump on a busy 2-core machine drops a few
    thousand of the ~340,000 frames. A capture that still lost reads is taken again
    (three attempts at most)."""
    for attempt in range(1, 4):
        port = _port()
        server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", *([] if structured else ["--no-sr"]),
                  "memory", "256M"]
        fio = ["fio", "--name=small", "--ioengine=nbd", f"--uri=nbd://127.0.0.1:{port}/", "--rw=randread",
               f"--bs={SMALL_BS}", "--iodepth=16", "--size=256M", f"--io_size={number_ios * SMALL_BS}",
               f"--number_ios={number_ios}", f"--runtime={max_seconds}", "--output-format=json",
               *([f"--rate_iops={rate_iops}"] if rate_iops else [])]
        with process(server, port=port), tcpdump(out, port, buffer_kib=65536, immediate=False):
            text = run(fio, timeout=max_seconds + 60)
        done = json.loads(text[text.index("{"):])["jobs"][0]["read"]["total_ios"]
        if done < number_ios:
            out.unlink()
            raise RuntimeError(f"fio did {done} of {number_ios} reads within {max_seconds} s; raise --fio-limit")
        reads, nbytes, _ = _decoded(json.loads(timed(_timed("nbdscope json", out)).out))
        if reads == number_ios and nbytes == number_ios * SMALL_BS:
            return
        print(f"  attempt {attempt}: the capture holds {reads} of {number_ios} reads; capturing again", flush=True)
    out.unlink()
    raise RuntimeError("tcpdump lost packets in three attempts; lower --fio-rate")


def _decoded(report: dict[str, list[dict[str, object]]]) -> tuple[int, int, int]:
    """Reads, read bytes and messages (all sessions, handshakes included) of a JSON report."""
    reads = [s["commands"].get("NBD_CMD_READ", {}) for s in report["sessions"]]  # type: ignore[attr-defined]
    return (sum(r.get("count", 0) for r in reads), sum(r.get("bytes", 0) for r in reads),
            sum(s["messages"] for s in report["sessions"]))  # type: ignore[misc]


def _timed(tool: str, capture: Path) -> list[str]:
    nbdscope = [sys.executable, "-m", "nbdscope", "analyze", "--format"]
    return {"nbdscope json": [*nbdscope, "json", str(capture)],
            "nbdscope jsonl": [*nbdscope, "jsonl", str(capture)],
            # fio's reads only: the shadow disk has nothing a read could contradict, so this should cost nothing
            "nbdscope verify": [*nbdscope, "json", "--verify-data", str(capture)],
            "tshark -Y nbd": [a.replace("{file}", str(capture)) for a in TSHARK_PLAIN],
            "tshark -T fields": [a.replace("{file}", str(capture)) for a in TSHARK]}[tool]


SMALL_TOOLS = ("nbdscope json", "nbdscope jsonl", "nbdscope verify", "tshark -Y nbd", "tshark -T fields")


def bench_small(capture: Path, rounds: int, number_ios: int) -> dict[str, object]:
    """Every tool once per round, the order rotated each round so that none always
    runs first (cold caches) or right after another's memory churn."""
    with open(capture, "rb") as f:  # into the page cache before the first timed run
        while f.read(1 << 24):
            pass
    times: dict[str, list[float]] = {t: [] for t in SMALL_TOOLS}
    cpu: dict[str, list[float]] = {t: [] for t in SMALL_TOOLS}
    rss: dict[str, float] = dict.fromkeys(SMALL_TOOLS, 0.0)
    ours = theirs = reads = read_bytes = 0
    for r in range(rounds):
        for tool in SMALL_TOOLS[r % len(SMALL_TOOLS):] + SMALL_TOOLS[:r % len(SMALL_TOOLS)]:
            t = timed(_timed(tool, capture), keep_output=tool in ("nbdscope json", "tshark -T fields"))
            times[tool].append(t.wall)
            cpu[tool].append(t.cpu)
            rss[tool] = max(rss[tool], t.rss_mb)
            if tool == "nbdscope json":
                reads, read_bytes, ours = _decoded(json.loads(t.out))
            elif tool == "tshark -T fields":
                theirs = tshark_messages(t.out)
    complete = reads == number_ios and read_bytes == number_ios * SMALL_BS
    rows = {}
    for tool in SMALL_TOOLS:
        messages = ours if tool.startswith("nbdscope") else theirs
        median = statistics.median(times[tool])
        cpu_median = statistics.median(cpu[tool])
        rows[tool] = {"median_s": median, "min_s": min(times[tool]), "max_s": max(times[tool]),
                      "cpu_s": cpu_median, "messages": messages,
                      "us_per_message": median / messages * 1e6 if messages else None,
                      "cpu_us_per_message": cpu_median / messages * 1e6 if messages else None,
                      "peak_rss_mb": rss[tool]}
    return {"capture": capture.name, "bytes": capture.stat().st_size, "frames": _frames(capture),
            "rounds": rounds, "reads": reads, "complete": complete, "tools": rows}


def _frames(capture: Path) -> int:
    return int(run(["capinfos", "-c", "-M", "-T", str(capture)]).splitlines()[-1].split("\t")[-1])


def print_small(r: dict[str, object], structured: bool) -> None:
    tools: dict[str, dict[str, float]] = r["tools"]  # type: ignore[assignment]
    base = tools["tshark -Y nbd"]
    print(f"\nfio 4k randread QD16 on nbdkit memory ({'structured' if structured else 'simple'} replies): "
          f"{r['capture']}, {r['frames']} frames, {r['bytes'] / 1e6:.0f} MB; median of {r['rounds']} rounds\n")
    head = (f"{'tool':<18}{'median s':>9}{'range s':>13}{'messages':>9}{'us/msg':>8}{'ratio':>7}"
            f"{'cpu s':>8}{'cpu us/msg':>11}{'ratio':>7}{'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for tool, t in tools.items():
        per, cpu_per = t["us_per_message"] or float("nan"), t["cpu_us_per_message"] or float("nan")
        spread = f"{t['min_s']:.2f}-{t['max_s']:.2f}"
        print(f"{tool:<18}{t['median_s']:>9.2f}{spread:>13}{t['messages']:>9}{per:>8.2f}"
              f"{per / (base['us_per_message'] or float('nan')):>6.2f}x{t['cpu_s']:>8.2f}{cpu_per:>11.2f}"
              f"{cpu_per / (base['cpu_us_per_message'] or float('nan')):>6.2f}x{t['peak_rss_mb']:>8.0f}")
    print("(ratio: microseconds per message against tshark -Y nbd's; cpu: user + system time of the process)")
    print(f"(tshark -Y nbd decodes what -T fields does; all {r['reads']} reads decoded by nbdscope, data "
          f"complete: {r['complete']})")
    if tools["nbdscope json"]["messages"] < SMALL_MIN_MESSAGES:
        print(f"note: fewer than {SMALL_MIN_MESSAGES} messages; raise --number-ios for a per-message measurement")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=("all", "bulk", "small"), default="all")
    p.add_argument("--size", type=size_arg, default=size_arg("1G"), help="bulk: bytes nbdcopy reads")
    p.add_argument("--runs", type=int, default=2, help="bulk: runs per tool, the best is kept")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nbdscope-bench"),
                   help="bulk captures (reused) and results.json")
    p.add_argument("--regenerate", action="store_true", help="capture again even if a capture is there")
    p.add_argument("--number-ios", type=int, default=160_000, help="small: 4k reads fio makes (messages: twice)")
    p.add_argument("--rounds", type=int, default=5, help="small: rounds of every tool, the median is kept")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="small: keep the capture in DIR and reuse it (default: a temp dir, removed)")
    p.add_argument("--structured-replies", action="store_true",
                   help="small: let nbdkit use structured replies (tshark 4.0 then decodes only the requests)")
    p.add_argument("--fio-rate", type=int, default=20_000, metavar="IOPS",
                   help="small: pace fio at this many reads per second (0: unpaced) so that tcpdump keeps up")
    p.add_argument("--fio-limit", type=int, default=180, help="small: seconds fio may take at most")
    args = p.parse_args()
    if min(args.rounds, args.runs, args.number_ios) < 1:
        p.error("--rounds, --runs and --number-ios must be at least 1")
    if os.geteuid() != 0:
        print("run as root: tcpdump and network namespaces need it", file=sys.stderr)
        return 2
    needed = ["nbdkit", "tcpdump", "tshark", "capinfos"]
    needed += ["nbdcopy", "ethtool", "ip"] if args.workload != "small" else []
    needed += ["fio"] if args.workload != "bulk" else []
    for tool in needed:
        if shutil.which(tool) is None:
            print(f"missing {tool} (scripts/install-deps.sh installs it)", file=sys.stderr)
            return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    if args.workload != "small":
        results["bulk"] = bulk(args)
    if args.workload != "bulk":
        results["small"] = small(args)
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    return 0


def bulk(args: argparse.Namespace) -> list[dict[str, object]]:
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
    return rows


def small(args: argparse.Namespace) -> dict[str, object]:
    name = f"small-{args.number_ios}-{'sr' if args.structured_replies else 'simple'}.pcap"
    with tempfile.TemporaryDirectory(prefix="nbdscope-small-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if args.regenerate or not path.exists():
            print(f"capturing {path} ...", flush=True)
            capture_small(path, args.number_ios, args.structured_replies, args.fio_rate, args.fio_limit)
        result = bench_small(path, args.rounds, args.number_ios)
    print_small(result, args.structured_replies)
    return result

if __name__ == "__main__":
    sys.exit(main())
