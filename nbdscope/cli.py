"""The `nbdscope` command line (names as in CONTRACT.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import IO, Any

from nbdscope import __version__
from nbdscope.analysis.anomaly import SEVERITY_RANK, Anomaly
from nbdscope.analysis.engine import Engine, Result
from nbdscope.analysis.rules import ALL_RULES
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev

EXIT_OK, EXIT_ANOMALY, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbdscope", description="Decode NBD traffic and judge it against the spec.")
    p.add_argument("--version", action="version", version=f"nbdscope {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="decode pcap/pcapng files and print a report")
    a.add_argument("files", nargs="+", metavar="FILE")
    a.add_argument("--format", choices=("text", "json", "jsonl"), default="text")
    a.add_argument("--messages", action="store_true", help="text: print the decoded timeline too")
    a.add_argument("--port", type=int, action="append", default=[], metavar="N",
                   help="extra TCP port to treat as NBD (repeatable)")
    a.add_argument("--fail-on", choices=("error", "warning", "never"), default="never")
    a.add_argument("-o", "--output", metavar="FILE",
                   help="write the report here instead of stdout; a name ending in .pcapng instead gets the input "
                        "capture back with every anomaly as a packet comment (the report then goes to stdout)")
    a.add_argument("--redact", action="store_true",
                   help="with -o FILE.pcapng: zero read and write data in the written packets (headers kept)")
    a.add_argument("--verify-data", action="store_true",
                   help="also compare read data with earlier writes (stale-read); slower")

    x = sub.add_parser("proxy", help="transparent relay between an NBD client and server, decoding live")
    x.add_argument("--listen", required=True, metavar="ADDR", help="HOST:PORT, [IPV6]:PORT, :PORT or unix:/path")
    x.add_argument("--upstream", required=True, metavar="ADDR", help="the real server, same forms")
    x.add_argument("--jsonl", metavar="FILE", help="write the decoded timeline and anomalies as JSON lines")
    x.add_argument("--pcapng", metavar="FILE", help="write what passed as a capture")
    x.add_argument("--quiet", action="store_true", help="no console timeline (anomalies are still shown)")
    x.add_argument("--set-flags", default="", metavar="BITS", help="set these transmission flags (names or bits)")
    x.add_argument("--clear-flags", default="", metavar="BITS", help="clear these transmission flags")
    x.add_argument("--redact", action="store_true", help="zero read/write data in the pcapng (JSONL has none)")
    x.add_argument("--delay", default="", metavar="CMD=MS,...",
                   help="hold requests of these commands for MS milliseconds before forwarding (e.g. READ=5)")
    x.add_argument("--grace", type=float, default=5.0, metavar="S", help="seconds open sessions get at shutdown")
    x.add_argument("--tui", action="store_true", help="show the relayed traffic in the terminal UI")

    t = sub.add_parser("tui", help="terminal UI over capture files, a live interface or the proxy")
    t.add_argument("files", nargs="*", metavar="FILE")
    t.add_argument("--port", type=int, action="append", default=[], metavar="N",
                   help="extra TCP port to treat as NBD (repeatable)")
    t.add_argument("-i", "--interface", metavar="IFACE", help="capture live from this interface (tcpdump)")
    t.add_argument("--filter", default="tcp", metavar="BPF", help="live: capture filter (default: tcp)")
    t.add_argument("--listen", metavar="ADDR", help="run the proxy: listen here (with --upstream)")
    t.add_argument("--upstream", metavar="ADDR", help="run the proxy: relay to this server")

    lv = sub.add_parser("live", help="capture from a network interface and decode live")
    lv.add_argument("-i", "--interface", required=True, metavar="IFACE")
    lv.add_argument("--port", type=int, action="append", default=[], metavar="N",
                    help="extra TCP port to treat as NBD (repeatable)")
    lv.add_argument("--filter", default="tcp", metavar="BPF", help="capture filter (default: tcp)")
    lv.add_argument("--buffer", type=int, default=65536, metavar="KIB", help="kernel capture buffer (tcpdump -B)")
    lv.add_argument("--format", choices=("text", "jsonl"), default="text")
    lv.add_argument("-o", "--output", metavar="FILE", help="write the timeline here instead of stdout")
    lv.add_argument("--fail-on", choices=("error", "warning", "never"), default="never")
    lv.add_argument("--tui", action="store_true", help="show the traffic in the terminal UI")

    r = sub.add_parser("rules", help="list every anomaly rule")
    r.add_argument("--format", choices=("text", "json"), default="text")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "analyze":
            return analyze(args)
        if args.command == "proxy":
            return proxy(args)
        if args.command == "tui":
            return tui(args)
        if args.command == "live":
            return live(args)
        return rules(args)
    except UsageError as exc:
        print(f"nbdscope: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nbdscope: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("nbdscope: error: out of memory", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug of ours: one line for the user, the traceback on request
        if os.environ.get("NBDSCOPE_DEBUG"):
            raise
        print(f"nbdscope: internal error: {type(exc).__name__}: {exc} (set NBDSCOPE_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`); nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _open_output(stack: ExitStack, path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return stack.enter_context(open(path, "w", encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _items_with_progress(files: list[str], ports: list[int], trace: list[Any] | None = None) -> Iterator[Any]:
    from nbdscope.capture import read_captures
    from nbdscope.report.progress import ProgressBar

    with ProgressBar(files) as bar:
        yield from read_captures(files, extra_ports=ports, progress=bar.update, reuse_buffers=True, trace=trace)


def _check_inputs(paths: list[str]) -> None:
    """Refuse unreadable inputs before any output is written."""
    from nbdscope.capture import CaptureError
    from nbdscope.capture.pcapio import open_capture

    for path in paths:
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a directory")
        try:
            open_capture(path)[0].close()
        except CaptureError as exc:
            raise UsageError(str(exc)) from None


def analyze(args: argparse.Namespace) -> int:
    from nbdscope.capture import CaptureError
    from nbdscope.report.records import anomaly_json, message_json

    annotate = args.output is not None and args.output.lower().endswith(".pcapng")
    if annotate and len(args.files) != 1:
        raise UsageError(f"{args.output}: an annotated capture is written from exactly one input file, "
                         f"not {len(args.files)}")
    if args.redact and not annotate:
        raise UsageError("--redact applies to an annotated capture: add -o FILE.pcapng")
    if annotate and os.path.exists(args.output) and os.path.samefile(args.output, args.files[0]):
        raise UsageError(f"{args.output}: refusing to overwrite the input capture")
    _check_inputs(args.files)
    with ExitStack() as stack:
        out = _open_output(stack, None if annotate else args.output)
        on_message: Callable[[Session, ev.Event], None] | None = None
        on_anomaly: Callable[[Anomaly], None] | None = None
        engine: Engine
        if args.format == "jsonl":
            def on_message(session: Session, e: ev.Event) -> None:
                out.write(message_json(session.id, e, engine.t0()).decode())

            def on_anomaly(a: Anomaly) -> None:
                out.write(anomaly_json(a).decode())
        elif args.format == "text" and args.messages:
            from nbdscope.report.timeline import message_line

            def on_message(session: Session, e: ev.Event) -> None:
                out.write(message_line(session.id, e, engine.t0()) + "\n")
        engine = Engine(on_message=on_message, on_anomaly=on_anomaly, keep_data=args.verify_data,
                        track_payload=args.redact)
        redaction = None
        if args.redact:
            from nbdscope.capture.pcapio.redact import FrameRedaction

            redaction = FrameRedaction(engine.connection)
            items = redaction.tap(_items_with_progress(args.files, args.port, redaction.trace))
        else:
            items = _items_with_progress(args.files, args.port)
        try:
            result = engine.run(items)
            if annotate:
                _write_annotated(args, result, redaction)
        except CaptureError as exc:
            raise UsageError(str(exc)) from None
        _write_report(args, result, out)
        for problem in result.problems:
            print(f"nbdscope: warning: {problem.source}: frame {problem.frame}: {problem.message}; "
                  "results up to there are kept", file=sys.stderr)
    return _exit_code(args.fail_on, result)


def _write_annotated(args: argparse.Namespace, result: Result, redaction: Any) -> None:
    """The input capture back as pcapng, anomalies as packet comments (report/annotate.py)."""
    from nbdscope.report.annotate import write_annotated

    spans = redaction.finish() if redaction is not None else None
    try:
        with open(args.output, "wb") as f:
            write_annotated(args.files[0], f, result.anomalies, spans)
    except OSError as exc:
        raise UsageError(f"{args.output}: cannot write: {exc.strerror}") from None


def _write_report(args: argparse.Namespace, result: Result, out: IO[str]) -> None:
    if args.format == "json":
        json.dump(json_report(args.files, result), out, indent=2)
        out.write("\n")
    elif args.format == "text":
        from rich.console import Console

        from nbdscope.report.text import render

        console = Console(file=out, width=None if out.isatty() else 140, highlight=False)
        render(result, args.files, console)


def json_report(inputs: list[str], result: Result) -> dict[str, object]:
    return {
        "nbdscope": __version__,
        "inputs": inputs,
        "sessions": [s.as_json() for s in result.sessions],
        "anomalies": [a.as_json() for a in result.anomalies],
        "capture_problems": [{"input": p.source, "frame": p.frame, "message": p.message} for p in result.problems],
    }


def _exit_code(fail_on: str, result: Result) -> int:
    if fail_on == "never":
        return EXIT_OK
    threshold = SEVERITY_RANK[fail_on]
    return EXIT_ANOMALY if any(SEVERITY_RANK[a.severity] >= threshold for a in result.anomalies) else EXIT_OK


def proxy(args: argparse.Namespace) -> int:
    from nbdscope.proxy.addresses import parse_address
    from nbdscope.proxy.rewrite import parse_bits, parse_delays
    from nbdscope.proxy.run import run_proxy

    try:
        listen, upstream = parse_address(args.listen), parse_address(args.upstream)
        set_mask, clear_mask = parse_bits(args.set_flags), parse_bits(args.clear_flags)
        delays = parse_delays(args.delay)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.tui:
        from nbdscope.tui.sources import ProxySource
        from nbdscope.tui.store import Store

        store = Store()
        source = ProxySource(store, listen, upstream, pcapng=args.pcapng, jsonl=args.jsonl, set_mask=set_mask,
                             clear_mask=clear_mask, redact=args.redact, grace=args.grace, delays=delays)
        return _run_tui(store, source)
    with ExitStack() as stack:
        try:
            return run_proxy(listen, upstream, jsonl=args.jsonl, pcapng=args.pcapng, quiet=args.quiet,
                             set_mask=set_mask, clear_mask=clear_mask, redact=args.redact, grace=args.grace,
                             delays=delays, stack=stack)
        except OSError as exc:
            raise UsageError(f"{exc.filename or args.listen}: {exc.strerror or exc}") from None


def _run_tui(store: Any, source: Any) -> int:
    """Start the source (so a bad address or interface fails here, in one line), then the UI."""
    from nbdscope.tui.app import NbdscopeApp
    from nbdscope.tui.sources import ProxySource

    if not sys.stdout.isatty():
        raise UsageError("the terminal UI needs a terminal (stdout is not one)")
    source.start()
    if isinstance(source, ProxySource):
        source.ready.wait(10)
        if source.error:
            source.stop()
            raise UsageError(f"cannot listen on {source.error}")
    try:
        NbdscopeApp(store, source).run()
    finally:
        source.stop()
    for text in store.notices:
        print(f"nbdscope: {text}", file=sys.stderr)
    return EXIT_OK


def tui(args: argparse.Namespace) -> int:
    from nbdscope.tui.sources import FileSource, ProxySource
    from nbdscope.tui.store import Store

    kinds = [bool(args.files), bool(args.interface), bool(args.listen or args.upstream)]
    if sum(kinds) != 1:
        raise UsageError("give capture FILEs, or -i IFACE, or --listen ADDR --upstream ADDR (exactly one of them)")
    store = Store()
    source: Any
    if args.files:
        _check_inputs(args.files)
        source = FileSource(store, args.files, args.port)
    elif args.interface:
        source = _live_source(store, args.interface, args.port, args.filter, 65536)
    else:
        from nbdscope.proxy.addresses import parse_address

        if not (args.listen and args.upstream):
            raise UsageError("the proxy needs both --listen and --upstream")
        try:
            source = ProxySource(store, parse_address(args.listen), parse_address(args.upstream))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return _run_tui(store, source)


def _live_source(store: Any, interface: str, ports: list[int], bpf: str, buffer_kib: int) -> Any:
    from nbdscope.capture.live import LiveError
    from nbdscope.tui.sources import LiveSource

    source = LiveSource(store, interface, ports, bpf=bpf, buffer_kib=buffer_kib)
    try:
        source.capture.start()
    except LiveError as exc:
        raise UsageError(str(exc)) from None
    return source


def live(args: argparse.Namespace) -> int:
    """Capture from an interface until SIGINT; print the timeline (or show the UI)."""
    import signal

    from nbdscope.capture.live import LiveCapture, LiveError
    from nbdscope.report.records import anomaly_json, message_json
    from nbdscope.report.timeline import anomaly_line, message_line

    if args.tui:
        from nbdscope.tui.store import Store

        store = Store()
        return _run_tui(store, _live_source(store, args.interface, args.port, args.filter, args.buffer))
    capture = LiveCapture(args.interface, bpf=args.filter, extra_ports=args.port, buffer_kib=args.buffer,
                          on_notice=lambda text: print(f"nbdscope: {text}", file=sys.stderr, flush=True))
    try:
        capture.start()
    except LiveError as exc:
        raise UsageError(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop tcpdump, then decode what it still hands over
        signal.signal(sig, lambda *_: capture.request_stop())
    print(f"nbdscope live: capturing on {args.interface} ({args.filter}); Ctrl-C stops", file=sys.stderr, flush=True)
    with ExitStack() as stack:
        out = _open_output(stack, args.output)
        engine: Engine

        def on_message(session: Session, e: ev.Event) -> None:
            if args.format == "jsonl":
                out.write(message_json(session.id, e, engine.t0()).decode())
            else:
                out.write(message_line(session.id, e, engine.t0()) + "\n")
            out.flush()

        def on_anomaly(a: Anomaly) -> None:
            out.write(anomaly_json(a).decode() if args.format == "jsonl" else anomaly_line(a) + "\n")
            out.flush()

        engine = Engine(on_message=on_message, on_anomaly=on_anomaly)
        for item in capture.items():
            engine.feed(item)
        result = engine.finish()
    print(f"nbdscope live: {len(result.sessions)} sessions, {len(result.anomalies)} anomalies, "
          f"{capture.dropped} packets dropped by the kernel", file=sys.stderr, flush=True)
    return _exit_code(args.fail_on, result)


def rules(args: argparse.Namespace) -> int:
    infos = [cls.INFO for cls in ALL_RULES]
    if args.format == "json":
        json.dump([{"id": i.id, "severity": i.severity, "blame": i.blame, "spec": i.spec, "summary": i.summary}
                   for i in infos], sys.stdout, indent=2)
        print()
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(infos)} rules")
    for col in ("id", "severity", "blame", "spec", "meaning"):
        table.add_column(col, overflow="fold")
    for i in infos:
        table.add_row(i.id, i.severity, i.blame, i.spec, i.summary)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
