"""`nbdscope proxy`: wire the relay to the engine and the outputs, run until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from contextlib import ExitStack
from typing import IO, Any

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Engine
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.relay import Relay
from nbdscope.proxy.rewrite import FlagRewriter
from nbdscope.report.pcapng import PcapngWriter
from nbdscope.report.records import message_record
from nbdscope.report.timeline import message_line

FLUSH_EVERY = 0.25  # seconds


def run_proxy(listen: Address, upstream: Address, *, jsonl: str | None, pcapng: str | None, quiet: bool,
              set_mask: int, clear_mask: int, redact: bool, grace: float, stack: ExitStack,
              delays: dict[int, float] | None = None) -> int:
    out: IO[str] = sys.stdout
    jsonl_file = stack.enter_context(open(jsonl, "w", encoding="utf-8")) if jsonl else None
    pcap_file = stack.enter_context(open(pcapng, "wb")) if pcapng else None

    def on_message(session: Session, e: ev.Event) -> None:
        if not quiet:
            out.write(message_line(session.id, e, engine.t0()) + "\n")
            out.flush()
        if jsonl_file is not None:
            record: dict[str, Any] = message_record(session.id, e, engine.t0())
            jsonl_file.write(json.dumps(record) + "\n")  # flushed by the timer below and at exit

    def on_anomaly(a: Anomaly) -> None:
        out.write(f"ANOMALY {a.severity} {a.rule} blame={a.blame} {a.session} frame {a.frame}: {a.message}\n")
        out.flush()
        if jsonl_file is not None:
            jsonl_file.write(json.dumps({"type": "ANOMALY", **a.as_json()}) + "\n")
            jsonl_file.flush()

    engine = Engine(on_message=on_message, on_anomaly=on_anomaly, track_payload=redact)
    rewriter = (lambda: FlagRewriter(set_mask, clear_mask)) if set_mask or clear_mask else None
    relay = Relay(listen, upstream, engine, PcapngWriter(pcap_file), rewriter=rewriter, grace=grace, redact=redact,
                  delays=delays)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await relay.start()
        print(f"nbdscope proxy: listening on {listen}, relaying to {upstream}", file=sys.stderr, flush=True)
        while not stop.is_set():  # flush the log a few times a second rather than per line
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            if jsonl_file is not None:
                jsonl_file.flush()
        await relay.stop()

    try:
        import uvloop  # a faster event loop when installed; the relay works the same without it

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    result = engine.finish()
    if pcap_file is not None:
        pcap_file.flush()
    s = relay.stats
    print(f"nbdscope proxy: {s.sessions} sessions, {s.bytes['c2s']} bytes to the server, {s.bytes['s2c']} to "
          f"clients, {len(result.anomalies)} anomalies, {s.upstream_failures} upstream failures",
          file=sys.stderr, flush=True)
    return 0
