#!/usr/bin/env python3
"""How the terminal UI copes with big captures: time to open one, to reach the
message table, to scroll to its end, to page through it and to filter it.

Two captures:
- `million`: made here with the test encoder (no peers needed), one NBD session
  of 500,000 pipelined requests and their replies, 1,000,000 messages, 16
  requests or replies per TCP segment, reads of 512 bytes among TRIM,
  WRITE_ZEROES and FLUSH;
- `loopback`: nbdcopy reading 1 GiB from nbdkit over loopback, as in
  bench_analyze.py (made here, as root, on a free port, if missing).

The app runs headless (Textual's run_test at 120x40), so this measures nbdscope's
own work, not a terminal emulator's. Numbers are printed, never asserted.

    python3 benchmarks/bench_tui.py [--only million|loopback] [--workdir /tmp/nbdscope-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import nbdwire as W  # noqa: E402
from tests.pcapbuild import ACK, PSH, Flow, frame  # noqa: E402

REQUESTS = 500_000
BATCH = 16
CMD_READ, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES = 0, 3, 4, 6  # typed from the spec, like tests/nbdwire.py
OPT_GO, REP_ACK, REP_INFO = 7, 1, 3


def make_million(path: Path) -> None:
    """One fixed-newstyle session with REQUESTS pipelined requests, written as classic pcap."""
    import dpkt

    flow = Flow(cport=41000, sport=10809)
    t = 1_700_000_000.0
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)

        def put(pkt: bytes) -> None:
            nonlocal t
            t += 0.00001
            w.writepkt(frame(1, pkt), ts=t)

        for pkt in flow.syn():
            put(pkt)
        put(flow.s2c(W.greeting_newstyle()))
        put(flow.c2s(W.client_flags() + W.option(OPT_GO, W.opt_go_data())))
        put(flow.s2c(W.opt_reply(OPT_GO, REP_INFO, W.info_export(1 << 40, 0b1101101)) + W.opt_reply(OPT_GO, REP_ACK)))
        kinds = (CMD_TRIM, CMD_WRITE_ZEROES, CMD_TRIM, CMD_READ, CMD_TRIM, CMD_WRITE_ZEROES, CMD_TRIM, CMD_FLUSH)
        data = bytes(512)
        for base in range(0, REQUESTS, BATCH):
            reqs, reps = [], []
            for cookie in range(base + 1, base + BATCH + 1):
                cmd = kinds[cookie % len(kinds)]
                length = 0 if cmd == CMD_FLUSH else 512 if cmd == CMD_READ else 65536
                offset = 0 if cmd == CMD_FLUSH else (cookie * 65536) % (1 << 40)
                reqs.append(W.request(cmd, cookie, offset, length))
                reps.append(W.simple_reply(cookie, 0, data if cmd == CMD_READ else b""))
            put(flow.c2s(b"".join(reqs), flags=ACK | PSH))
            put(flow.s2c(b"".join(reps), flags=ACK | PSH))
        for pkt in flow.fin():
            put(pkt)


def make_loopback(path: Path) -> None:
    """As bench_analyze.py does, but on a free port: nbdcopy reads 1 GiB from nbdkit (paced so tcpdump keeps up)."""
    from tests.live import free_port, process, run, tcpdump

    if os.geteuid() != 0:
        raise SystemExit("making the loopback capture needs root (tcpdump); or pass --only million")
    port = free_port()
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=rate", "pattern", "1G", "rate=1G"]
    with process(server, port=port), tcpdump(path, port, buffer_kib=262144, immediate=False):
        run(["nbdcopy", "--connections=1", f"nbd://127.0.0.1:{port}", "null:"], timeout=300)


async def measure(path: Path) -> dict[str, float]:
    from nbdscope.tui.app import NbdscopeApp
    from nbdscope.tui.messages import MessagesScreen
    from nbdscope.tui.sources import file_producer
    from nbdscope.tui.store import Store
    from nbdscope.tui.table import MessageTable

    out: dict[str, float] = {}
    store = Store()
    app = NbdscopeApp(store, file_producer(store, [str(path)]))
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 900
        while not store.done and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause()
        out["open_s"] = time.perf_counter() - start
        out["messages"] = len(store)
        t = time.perf_counter()
        await pilot.press("m")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MessagesScreen)
        table = screen.query_one(MessageTable)
        out["table_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await pilot.press("end")
        await pilot.pause()
        out["to_end_s"] = time.perf_counter() - t
        assert table.cursor == table.count - 1 == len(store) - 1
        pages = 200
        t = time.perf_counter()
        for _ in range(pages):
            await pilot.press("pageup")
        await pilot.pause()
        out["page_ms"] = (time.perf_counter() - t) / pages * 1000
        t = time.perf_counter()
        await pilot.press("r")  # request <-> reply jump at the far end of the table
        await pilot.pause()
        out["jump_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        await pilot.press("f")
        await pilot.pause()
        for ch in "cmd=read":
            await pilot.press(ch)
        await pilot.press("enter")
        while screen.view is None or screen.scanned < len(store):
            await pilot.pause(0.02)
            if time.perf_counter() - t > 300:
                break
        await pilot.pause()
        out["filter_s"] = time.perf_counter() - t
        out["filtered"] = table.count
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("million", "loopback"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/nbdscope-bench"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    for name, file, make in (("million", "tui-million.pcap", make_million),
                             ("loopback", "tui-loopback-1g.pcap", make_loopback)):
        if args.only and args.only != name:
            continue
        path = args.workdir / file
        if not path.exists():
            t = time.perf_counter()
            make(path)
            print(f"{name}: made {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
        # each capture in its own process, so peak RSS is that capture's
        import subprocess

        proc = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return 1
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name}: {path.stat().st_size / 1e6:.0f} MB, {r['messages']:,.0f} messages: open {r['open_s']:.2f} s, "
              f"message table {r['table_s'] * 1000:.0f} ms, scroll to end {r['to_end_s'] * 1000:.0f} ms, "
              f"page up {r['page_ms']:.1f} ms/page, request/reply jump {r['jump_ms']:.1f} ms, "
              f"filter cmd=read {r['filter_s']:.2f} s ({r['filtered']:,.0f} rows), peak RSS {r['peak_rss_mb']:.0f} MB")
    (args.workdir / "tui-results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(json.dumps(asyncio.run(measure(Path(sys.argv[2])))))
        sys.exit(0)
    sys.exit(main())
