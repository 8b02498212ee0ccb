#!/usr/bin/env python3
"""Decode-only time of the sans-IO decoder: no capture reading, no analysis.

Two workloads: the shipped captures/fio-iodepth8.pcap (its stream items read
once, before timing) and a synthetic stream of small messages built in-process
(a GO handshake, then N READ requests of 512 bytes and their simple replies,
fed to one Connection in 64 KiB pieces, a batch of requests before their
replies). Prints the best of R runs (time.perf_counter) for each.

    python3 benchmarks/bench_decode.py [--count 100000] [--runs 5]

To compare two trees, run it from each (it imports nbdscope from the tree it
lives in). On a busy machine wall time is noisy; ``--clock process_time``
counts only this process's CPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nbdscope import vocab as it  # noqa: E402
from nbdscope.capture import read_captures  # noqa: E402
from nbdscope.decoder import Connection  # noqa: E402
from tests import nbdwire as w  # noqa: E402

PIECE = 64 << 10
READ_SIZE = 512


def decode_items(items: list[it.StreamItem]) -> int:
    conns: dict[int, Connection] = {}
    n = 0
    for item in items:
        if isinstance(item, it.StreamOpen):
            conns[item.conn] = Connection(saw_start=item.saw_start)
            continue
        conn = conns.get(getattr(item, "conn", -1))
        if conn is None:
            continue
        if isinstance(item, it.StreamData):
            n += len(conn.feed(item.dir, item.data, frame=item.frame, time=item.time))
        elif isinstance(item, it.StreamGap):
            n += len(conn.gap(item.dir, item.nbytes, frame=item.frame, time=item.time))
        elif isinstance(item, it.StreamClose):
            n += len(conn.close(item.how, frame=item.frame, time=item.time, by=item.by))
    return n


Synthetic = tuple[bytes, bytes, list[tuple[bytes, bytes]]]


def synthetic(count: int) -> Synthetic:
    head_c = w.client_flags() + w.option(7, w.opt_go_data("", ()))
    head_s = w.greeting_newstyle() + w.opt_reply(7, 1)
    per = PIECE // 28  # requests per batch: about one piece of them
    data = bytes(READ_SIZE)
    batches = []
    for first in range(0, count, per):
        cookies = range(first, min(count, first + per))
        batches.append((b"".join(w.request(0, i, i * READ_SIZE, READ_SIZE) for i in cookies),
                        b"".join(w.simple_reply(i, 0, data) for i in cookies)))
    return head_c, head_s, batches


def decode_synthetic(parts: Synthetic) -> int:
    head_c, head_s, batches = parts
    conn = Connection()
    n = len(conn.feed("s2c", head_s, frame=1, time=0.0)) + len(conn.feed("c2s", head_c, frame=2, time=0.0))
    frame = 3
    for c, s in batches:
        for direction, blob in (("c2s", c), ("s2c", s)):
            for at in range(0, len(blob), PIECE):
                n += len(conn.feed(direction, blob[at:at + PIECE], frame=frame, time=0.0))  # type: ignore[arg-type]
                frame += 1
    return n + len(conn.close("fin", frame=frame, time=0.0))


def best(fn: Callable[[], int], runs: int, clock: Callable[[], float]) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(runs):
        t = clock()
        n = fn()
        times.append(clock() - t)
    return min(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000, help="READ requests in the synthetic stream")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clock", choices=("perf_counter", "process_time"), default="perf_counter")
    args = ap.parse_args()
    clock = getattr(time, args.clock)
    items = list(read_captures([str(ROOT / "captures" / "fio-iodepth8.pcap")]))
    t, n = best(lambda: decode_items(items), args.runs, clock)
    print(f"fio-iodepth8.pcap: {t * 1e3:.1f} ms (best of {args.runs}), {n} events")
    parts = synthetic(args.count)
    t, n = best(lambda: decode_synthetic(parts), args.runs, clock)
    print(f"synthetic {args.count} READ + reply ({READ_SIZE} B): {t * 1e3:.1f} ms (best of {args.runs}), "
          f"{n} events, {t / n * 1e9:.0f} ns per event")


if __name__ == "__main__":
    main()
