"""`nbdscope proxy` and the terminal UI over it: the options both take (declared once,
so `tui --listen` accepts every option `proxy` has), the outputs they write and the
run itself through ``nbdscope.pipeline``."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

from nbdscope import pipeline
from nbdscope.analysis.addons import Addon
from nbdscope.proxy.addresses import Address

JSONL_BUFFER = 1 << 20  # the JSONL is flushed on a timer; a small buffer would cost a write call every few lines


def add_proxy_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    """The proxy's options, for `proxy` (addresses required) and for `tui` (addresses choose the proxy)."""
    g = p.add_argument_group("proxy" if required else "proxy (with --listen and --upstream)")
    g.add_argument("--listen", required=required, metavar="ADDR", help="HOST:PORT, [IPV6]:PORT, :PORT or unix:/path")
    g.add_argument("--upstream", required=required, metavar="ADDR", help="the real server, same forms")
    g.add_argument("--jsonl", metavar="FILE", help="write the decoded timeline and anomalies as JSON lines")
    g.add_argument("--pcapng", metavar="FILE", help="write what passed as a capture")
    g.add_argument("--quiet", action="store_true", help="no console timeline (anomalies are still shown)")
    g.add_argument("--set-flags", default="", metavar="BITS", help="set these transmission flags (names or bits)")
    g.add_argument("--clear-flags", default="", metavar="BITS", help="clear these transmission flags")
    g.add_argument("--redact", action="store_true", help="zero read/write data in the pcapng (JSONL has none)")
    g.add_argument("--delay", default="", metavar="CMD=MS,...",
                   help="hold requests of these commands for MS milliseconds before forwarding (e.g. READ=5)")
    g.add_argument("--grace", type=float, default=5.0, metavar="S", help="seconds open sessions get at shutdown")


@dataclass
class ProxyPlan:
    """What the proxy options asked for, checked before anything is started."""

    listen: Address
    upstream: Address
    options: Any  # proxy.run.RelayOptions
    jsonl: str | None
    pcapng: str | None
    redact: bool
    quiet: bool
    selection: Any = None  # nbdscope.selection.Selection: which findings are reported (--select/--ignore)
    time: str = "rel"  # --time: the base of the console's times

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ProxyPlan:
        """Raises ValueError with a one-line reason for a bad address, flag name or delay."""
        from nbdscope.proxy.addresses import parse_address
        from nbdscope.proxy.rewrite import parse_bits, parse_delays
        from nbdscope.proxy.run import RelayOptions

        options = RelayOptions(parse_bits(args.set_flags), parse_bits(args.clear_flags), args.grace,
                               parse_delays(args.delay))
        return cls(parse_address(args.listen), parse_address(args.upstream), options, args.jsonl, args.pcapng,
                   args.redact, args.quiet, time=getattr(args, "time", "rel"))

    def outputs(self, stack: ExitStack, console: IO[str] | None) -> tuple[list[Addon], list[IO[Any]]]:
        """The output addons and the files to flush on the proxy's timer (opened here: OSError if one cannot be)."""
        from nbdscope.report import outputs
        from nbdscope.report.captures import RelayedCapture

        addons: list[Addon] = []
        files: list[IO[Any]] = []
        if console is not None:
            addons.append(outputs.TimelineLines(console, findings=True, messages=not self.quiet, time=self.time))
            files.append(console)
        if self.jsonl:
            f = stack.enter_context(open(self.jsonl, "wb", buffering=JSONL_BUFFER))
            addons.append(outputs.JsonlLines(f))
            files.append(f)
        if self.pcapng:
            g = stack.enter_context(open(self.pcapng, "wb"))
            addons.append(RelayedCapture(g, redact=self.redact))
            files.append(g)
        return addons, files

    def source(self, log: Any = None) -> Any:
        """Fork the relay (before any thread starts); a ProxySource reading it."""
        from nbdscope.proxy.source import ProxySource

        return ProxySource(self.listen, self.upstream, self.options, **({"log": log} if log else {}))


def _flusher(files: list[IO[Any]]) -> Any:
    def flush() -> None:
        for f in files:
            f.flush()
    return flush


def run_proxy(plan: ProxyPlan) -> int:
    """Relay until SIGINT or SIGTERM, decoding and writing as messages pass; 2 if the relay failed."""
    with ExitStack() as stack:
        addons, files = plan.outputs(stack, sys.stdout)
        source = plan.source()
        for sig in (signal.SIGINT, signal.SIGTERM):  # the relay stops; the run reads to the end
            signal.signal(sig, lambda *_: source.stop())
        problem = source.wait_ready()
        if problem is not None:
            raise OSError(problem)
        print(f"nbdscope proxy: listening on {plan.listen}, relaying to {plan.upstream}", file=sys.stderr,
              flush=True)
        # Every message makes a few short-lived, acyclic objects: collect cycles far less often
        # than after every 700 allocations, and never rescan what was loaded at start.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        source.on_idle = _flusher(files)
        result = pipeline.run(source, addons, selection=plan.selection)
        source.on_idle()
    print(source.summary(result), file=sys.stderr, flush=True)
    for a in result.internal_errors():
        print(f"nbdscope: internal error: {a.message}", file=sys.stderr)
    return 0 if source.relay.status == 0 else 2


def tui_producer(plan: ProxyPlan, store: Any, stack: ExitStack) -> Any:
    """The proxy for the terminal UI: the relay's logs become notices, the side files are written as usual."""
    from nbdscope.tui.sources import Producer

    addons, files = plan.outputs(stack, None)
    source = plan.source(log=store.add_notice)
    problem = source.wait_ready()
    if problem is not None:
        raise OSError(problem)
    source.on_idle = _flusher(files)
    return Producer(store, source, addons, selection=plan.selection)
