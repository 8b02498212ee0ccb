"""The commands that watch traffic as it happens: `live` (capture from an interface), `proxy`, and
`tui` over a file, an interface or the proxy, each run through nbdscope.pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from nbdscope.analysis.addons import Addon
from nbdscope.cli_common import (
    EXIT_OK,
    UsageError,
    check_inputs,
    exit_code,
    filtered,
    key_log,
    open_binary,
    open_output,
    report_failures,
)
from nbdscope.cli_rules import selection_of
from nbdscope.report.clock import TimeMode
from nbdscope.report.wording import plural


def proxy(args: argparse.Namespace) -> int:
    from nbdscope.cli_proxy import run_proxy

    plan = _proxy_plan(args, selection_of(args), key_log(args, growing=True))
    if args.tui:
        return _run_tui(lambda store, stack: _proxy_producer(plan, store, stack), time_mode=args.time)
    try:
        return run_proxy(plan)
    except OSError as exc:
        raise UsageError(f"{exc.filename or args.listen}: {exc.strerror or exc}") from None


def _proxy_producer(plan: Any, store: Any, stack: ExitStack) -> Any:
    from nbdscope.cli_proxy import tui_producer

    try:
        return tui_producer(plan, store, stack)
    except OSError as exc:
        raise UsageError(f"cannot listen on {exc.filename or plan.listen}: {exc.strerror or exc}") from None


def _run_tui(make: Callable[[Any, ExitStack], Any], time_mode: TimeMode = "rel") -> int:
    """Make the producer (so a bad address or interface fails here, in one line), then run the UI over it."""
    from nbdscope.tui.app import NbdscopeApp
    from nbdscope.tui.store import Store

    if not sys.stdout.isatty():
        raise UsageError("the terminal UI needs a terminal (stdout is not one)")
    store = Store()
    with ExitStack() as stack:
        producer = make(store, stack)
        producer.start()
        try:
            NbdscopeApp(store, producer, time_mode=time_mode).run()
        finally:
            producer.stop()
    for text in store.notices:
        print(f"nbdscope: {text}", file=sys.stderr)
    summary = producer.summary()  # the proxy's exit line, as the plain proxy prints it
    if summary:
        print(summary, file=sys.stderr)
    return EXIT_OK


def tui(args: argparse.Namespace) -> int:
    from nbdscope.tui.sources import file_producer

    kinds = [bool(args.files), bool(args.interface), bool(args.listen or args.upstream)]
    if sum(kinds) != 1:
        raise UsageError("give capture FILEs, or -i IFACE, or --listen ADDR --upstream ADDR (exactly one of them)")
    selection = selection_of(args)
    if args.files:
        args.files = check_inputs(args.files)
        keys = key_log(args)
        return _run_tui(lambda store, stack: file_producer(store, args.files, args.port, selection=selection,
                                                           tls_keys=keys), time_mode=args.time)
    keys = key_log(args, growing=True)
    if args.interface:
        return _run_tui(lambda store, stack: _live_producer(store, args.interface, args.port, args.filter, 65536,
                                                            selection, keys), time_mode=args.time)
    if not (args.listen and args.upstream):
        raise UsageError("the proxy needs both --listen and --upstream")
    plan = _proxy_plan(args, selection, keys)
    return _run_tui(lambda store, stack: _proxy_producer(plan, store, stack), time_mode=args.time)


def _proxy_plan(args: argparse.Namespace, selection: Any, keys: Any) -> Any:
    """The proxy's options (shared by `proxy` and `tui --listen`), a bad one as a usage error."""
    from nbdscope.cli_proxy import ProxyPlan

    try:
        plan = ProxyPlan.from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plan.selection, plan.tls_keys = selection, keys
    return plan


def _live_producer(store: Any, interface: str, ports: list[int], bpf: str, buffer_kib: int,
                   selection: Any = None, tls_keys: Any = None) -> Any:
    from nbdscope.capture.live import LiveError
    from nbdscope.tui.sources import live_producer

    try:
        return live_producer(store, interface, ports, bpf, buffer_kib, selection=selection, tls_keys=tls_keys)
    except LiveError as exc:
        raise UsageError(str(exc)) from None


def live(args: argparse.Namespace) -> int:
    """Capture from an interface until SIGINT; print the timeline (or show the UI)."""
    import signal

    from nbdscope import pipeline
    from nbdscope.capture.live import LiveError
    from nbdscope.report import outputs

    selection = selection_of(args)
    keys = key_log(args, growing=True)
    if args.tui:
        return _run_tui(lambda store, stack: _live_producer(store, args.interface, args.port, args.filter,
                                                            args.buffer, selection, keys), time_mode=args.time)
    with ExitStack() as stack:
        save = open_binary(stack, args.write) if args.write else None
        source = pipeline.LiveSource(args.interface, args.port, bpf=args.filter, buffer_kib=args.buffer,
                                     on_notice=lambda text: print(f"nbdscope: {text}", file=sys.stderr, flush=True),
                                     save=save)
        try:
            source.start()
        except LiveError as exc:
            raise UsageError(str(exc)) from None
        for sig in (signal.SIGINT, signal.SIGTERM):  # stop tcpdump, then decode what it still hands over
            signal.signal(sig, lambda *_: source.stop())
        print(f"nbdscope live: capturing on {args.interface} ({args.filter}); Ctrl-C stops", file=sys.stderr,
              flush=True)
        page = args.output if args.output and args.output.lower().endswith((".html", ".htm")) else None
        out = open_output(stack, None if page else args.output)
        addon: Addon = (outputs.JsonlLines(out, flush=True) if args.format == "jsonl"
                        else outputs.TimelineLines(out, findings=True, flush=True, time=args.time))
        addons = [filtered(addon, args.display_filter)]
        if page is not None:  # the HTML report, written when the capture stops; the timeline stays on stdout
            from nbdscope.report.html import HtmlReport

            addons.append(HtmlReport(open_output(stack, page), [source.label], selection))
        result = pipeline.run(source, addons, selection=selection, tls_keys=keys)
    silenced = f" ({sum(result.silenced.values())} silenced)" if result.silenced else ""
    print(f"nbdscope live: {plural(len(result.sessions), 'session')}, {plural(len(result.anomalies), 'anomaly')}"
          f"{silenced}, {plural(source.dropped, 'packet')} dropped by the kernel", file=sys.stderr, flush=True)
    report_failures(result)
    return exit_code(args.fail_on, result)
