#!/usr/bin/env python3
"""Where `nbdscope analyze` spends its time per message, stage by stage.

Runs the pipeline in-process on one capture, each time one stage longer: reading
the file's records; + link layer (Ethernet/IP/TCP headers); + TCP reassembly and
NBD detection; + the NBD decoder; + session summaries and stats; + the rules; +
the report (json, or the jsonl timeline); these stages run the pure-Python path. Then
the whole pipeline with the compiled per-message path (nbdscope/fastpath.py), for json
and for jsonl. Each is timed REPEAT times in CPU
seconds of this process (steadier than wall time on a shared machine) and the
fastest kept; the differences between consecutive stages are what each stage
adds, shown in microseconds per decoded NBD message. Stats come before the rules
because rules read the session state the summaries keep.

With --profile, also runs the json pipeline under cProfile and prints the
functions with the most own time (cProfile inflates small calls; read it for the
shape, the stage table for the size).

    python3 benchmarks/profile_analyze.py CAPTURE [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nbdscope import vocab as it
from nbdscope.analysis.addons import Addon
from nbdscope.analysis.engine import Engine
from nbdscope.capture import read_captures
from nbdscope.capture.linklayer import tcp_segment
from nbdscope.capture.pcapio import frames
from nbdscope.decoder import Connection
from nbdscope.pipeline import FileSource
from nbdscope.report.final import json_report
from nbdscope.report.outputs import JsonlLines


def read_only(path: str) -> int:
    return sum(1 for _ in frames(path, [], None, True))


def link_layer(path: str) -> int:
    return sum(1 for _, _, linktype, buf in frames(path, [], None, True) if tcp_segment(linktype, buf))


def reassembly(path: str) -> int:
    return sum(1 for _ in read_captures([path], reuse_buffers=True))


def decode(path: str) -> int:
    """Stream items into one decoder per connection, the events dropped."""
    conns: dict[int, Connection] = {}
    events = 0
    for item in read_captures([path], reuse_buffers=True):
        if isinstance(item, it.StreamOpen):
            conns[item.conn] = Connection(saw_start=item.saw_start)
            continue
        conn = conns.get(item.conn) if not isinstance(item, it.CaptureProblem) else None
        if conn is None:
            continue
        if type(item) is it.StreamData:
            events += len(conn.feed(item.dir, item.data, frame=item.frame, time=item.time))
        elif isinstance(item, it.StreamGap):
            events += len(conn.gap(item.dir, item.nbytes, frame=item.frame, time=item.time))
        elif isinstance(item, it.StreamClose):
            events += len(conn.close(item.how, frame=item.frame, time=item.time, by=item.by))
            del conns[item.conn]
    return events


def stats(path: str) -> int:
    result = Engine(rules=()).run(read_captures([path], reuse_buffers=True))
    return sum(s.messages for s in result.sessions)


def rules(path: str) -> int:
    result = Engine().run(read_captures([path], reuse_buffers=True))
    return sum(s.messages for s in result.sessions)


def report_json(path: str) -> int:
    result = Engine().run(read_captures([path], reuse_buffers=True))
    with open(os.devnull, "w") as out:
        json.dump(json_report([path], result), out, indent=2)
    return sum(s.messages for s in result.sessions)


def report_jsonl(path: str) -> int:
    with open(os.devnull, "w") as out:
        result = Engine([JsonlLines(out)]).run(read_captures([path], reuse_buffers=True))
    return sum(s.messages for s in result.sessions)


def _compiled(path: str, addons: list[Addon]) -> int:
    """The whole pipeline as `analyze` runs it, the compiled per-message path included (nbdscope/fastpath.py)."""
    source = FileSource([path])
    engine = Engine(addons)
    source.accelerate(engine)
    result = engine.run(source.items())
    TAKEN[path] = source.native.taken if source.native is not None else 0
    return sum(s.messages for s in result.sessions)


def compiled_json(path: str) -> int:
    return _compiled(path, [])


def compiled_jsonl(path: str) -> int:
    with open(os.devnull, "w") as out:
        return _compiled(path, [JsonlLines(out)])


TAKEN: dict[str, int] = {}
COMPILED: list[tuple[str, Callable[[str], int]]] = [("compiled path, json report", compiled_json),
                                                    ("compiled path, jsonl timeline", compiled_jsonl)]
STAGES: list[tuple[str, Callable[[str], int]]] = [
    ("read capture records", read_only), ("+ link layer headers", link_layer),
    ("+ TCP reassembly, detection", reassembly), ("+ NBD decoder", decode), ("+ sessions, stats", stats),
    ("+ rules", rules), ("+ json report", report_json)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="also cProfile the json pipeline")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    best: dict[str, float] = {}
    counts: dict[str, int] = {}
    for _ in range(max(1, args.repeat)):  # rounds over all stages, so that load spikes spread out
        for name, fn in [*STAGES, ("rules + jsonl timeline (instead of json)", report_jsonl), *COMPILED]:
            start = time.process_time()
            counts[name] = fn(args.capture)
            best[name] = min(best.get(name, float("inf")), time.process_time() - start)
    messages = counts["+ rules"]
    print(f"{args.capture}: {messages} NBD messages, CPU time, fastest of {args.repeat}\n")
    print(f"{'stage':<42}{'total s':>9}{'us/msg':>9}{'adds us/msg':>13}")
    previous = 0.0
    for name in [n for n in best if n not in dict(COMPILED)]:
        total = best[name]
        step = total - (best["+ rules"] if name.startswith("rules + jsonl") else previous)
        print(f"{name:<42}{total:>9.2f}{total / messages * 1e6:>9.2f}{step / messages * 1e6:>13.2f}")
        previous = total
    print(f"\nwith the compiled per-message path ({TAKEN.get(args.capture, 0)} of {messages} messages taken there):")
    for name, _ in COMPILED:
        print(f"{name:<42}{best[name]:>9.2f}{best[name] / messages * 1e6:>9.2f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(report_json, args.capture)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(args.top)
        print(f"\ncProfile of the json pipeline, top {args.top} by own time:\n")
        print(text.getvalue()[text.getvalue().index("   ncalls"):].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
