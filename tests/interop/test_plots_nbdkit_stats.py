"""Live interop: the HTML report's size and alignment histograms against nbdkit's stats filter, run as
an oracle on a real workload (fio's nbd engine with mixed sizes, nbdcopy, qemu-img) captured on loopback.

nbdkit-stats-filter(1) groups requests by floor(log2(size)) ("N bits") and, within a group, prints
"N bit aligned: P% (count)" for the offsets with at least N trailing zero bits, one line where that
count drops (offset 0 counts as aligned to every power of two). Observed in nbdkit 1.32: size groups
with the same request count print only one of them (the others are left out, not merged), so a group
missing from its output must tie with one it printed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from nbdscope.cli import main
from tests.htmlpages import plot_data
from tests.live import free_port, process, run, tcpdump

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump", "fio", "nbdcopy", "qemu-img"))
                                 or os.geteuid() != 0, reason="needs nbdkit, fio, nbdcopy, qemu-img and root")]

OPS = {"read": "NBD_CMD_READ", "write": "NBD_CMD_WRITE", "trim": "NBD_CMD_TRIM", "zero": "NBD_CMD_WRITE_ZEROES",
       "cache": "NBD_CMD_CACHE", "extents": "NBD_CMD_BLOCK_STATUS"}
_OP = re.compile(r"^(\w+): (\d+) ops, [\d.]+ s, (.+?), ")
_SIZE = re.compile(r"^\s+(\d+) bits: +[\d.]+% \((\d+) reqs, (.+) total\)$")
_ALIGN = re.compile(r"^\s+(\d+) bit aligned: +[\d.]+% \((\d+)\)$")


def human(n: int) -> str:
    """Bytes as nbdkit's stats filter prints them."""
    if n < 1024:
        return f"{n} bytes"
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
        if n < scale << 10 or unit == "GiB":
            return f"{n / scale:.2f} {unit}"
    raise AssertionError(n)


def parse_stats(text: str) -> dict[str, dict[str, object]]:
    """Per operation: ops, bytes (as printed) and the size groups, each with its count, bytes and
    alignment lines."""
    out: dict[str, dict[str, object]] = {}
    op: dict[str, object] | None = None
    group: dict[str, object] | None = None
    for line in text.splitlines():
        if m := _OP.match(line):
            op = out[m.group(1)] = {"ops": int(m.group(2)), "bytes": m.group(3), "sizes": {}}
        elif (m := _SIZE.match(line)) and op is not None:
            group = op["sizes"][int(m.group(1))] = {"reqs": int(m.group(2)), "bytes": m.group(3),  # type: ignore[index]
                                                    "aligned": {}}
        elif (m := _ALIGN.match(line)) and group is not None:
            group["aligned"][int(m.group(1))] = int(m.group(2))  # type: ignore[index]
        elif "other sizes" in line:
            raise AssertionError(f"nbdkit cut its histogram short (statsthreshold): {line}")
    return out


def aligned_lines(by_alignment: dict[str, int]) -> dict[int, int]:
    """The "N bit aligned" lines nbdkit would print for one size group, from our exact counts."""
    def at_least(bits: int) -> int:
        return sum(n for a, n in by_alignment.items() if int(a) >= bits)

    return {j: at_least(j) for j in range(64) if at_least(j) > at_least(j + 1)}


def test_histograms_agree_with_nbdkit_stats(tmp_path: Path) -> None:
    port = free_port()
    stats, cap, src = tmp_path / "stats.txt", tmp_path / "live.pcap", tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    uri = f"nbd://127.0.0.1:{port}"
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=stats", "memory", "64M",
              f"statsfile={stats}", "statsappend=true", "statsthreshold=100"]
    with tcpdump(cap, port):
        with process(server, port=port):
            run(["fio", "--name=nbd", "--ioengine=nbd", f"--uri={uri}", "--rw=randrw", "--bsrange=512-128k",
                 "--blockalign=512", "--iodepth=4", "--size=32M", "--number_ios=300", "--randrepeat=1",
                 "--output=/dev/null"], timeout=120)
            run(["nbdcopy", "--request-size=65536", str(src), uri])
            run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), uri])
    oracle = parse_stats(stats.read_text())  # written when nbdkit exits
    assert oracle["read"]["ops"] >= 100 and oracle["write"]["ops"] >= 100, oracle  # type: ignore[operator]

    page = tmp_path / "report.html"
    assert main(["analyze", str(cap), "-o", str(page)]) == 0
    data = plot_data(page.read_text())
    totals: dict[str, list[int]] = {}
    for per in data["totals"].values():  # type: ignore[attr-defined]
        for name, t in per.items():
            row = totals.setdefault(name, [0, 0])
            row[0] += t["count"]
            row[1] += t["bytes"]
    compared = 0
    for op, want in oracle.items():
        if op not in OPS:  # flush: no size nor offset
            continue
        name = OPS[op]
        assert totals[name][0] == want["ops"], op
        hist = data["sizes"][name]  # type: ignore[index]
        ours = {int(c): v for c, v in hist["sizes"].items()}
        if op in ("read", "write"):
            assert human(totals[name][1]) == want["bytes"], op
        for size, group in want["sizes"].items():  # type: ignore[attr-defined]
            assert ours[size][0] == group["reqs"] and human(ours[size][1]) == group["bytes"], (op, size)
            assert aligned_lines(hist["alignment"][str(size)]) == group["aligned"], (op, size)
            compared += group["reqs"]
        printed_counts = {g["reqs"] for g in want["sizes"].values()}  # type: ignore[attr-defined]
        for size, (count, _) in ours.items():
            if size not in want["sizes"]:  # type: ignore[operator]
                assert count in printed_counts, f"{op}: nbdkit left out {size} bits ({count} requests), no tie"
    assert compared >= 200
