"""The `nbdscope` command line (names as in docs/CONTRACT.md)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from nbdscope import __version__
from nbdscope.analysis.addons import Addon
from nbdscope.analysis.anomaly import INTERNAL_ERROR, SEVERITY_RANK
from nbdscope.analysis.engine import Result
from nbdscope.cli_help import finish
from nbdscope.cli_rules import RulesUsageError, add_rules_parser, add_selection_options, selection_of
from nbdscope.report.clock import TimeMode, add_time_option
from nbdscope.report.wording import plural

if TYPE_CHECKING:
    from nbdscope.capture.pcapio.redact import FrameRedaction

EXIT_OK, EXIT_ANOMALY, EXIT_USAGE = 0, 1, 2
SPOOL_IN_MEMORY = 8 << 20  # the --messages timeline is kept in memory up to this, then in a temporary file


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbdscope", description="Decode NBD traffic and judge it against the spec.")
    p.add_argument("--version", action="version", version=f"nbdscope {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                         help="what to do; `nbdscope COMMAND --help` describes each")

    a = sub.add_parser("analyze", help="decode pcap/pcapng files and print a report")
    a.add_argument("files", nargs="+", metavar="FILE",
                   help="capture file, or a directory of them; several are read as one capture (a rotating set), "
                        "in the order of their first timestamps")
    a.add_argument("--format", choices=("text", "json", "jsonl"), default="text",
                   help="text: a panel per session, then the findings; json: one report object; jsonl: one line per "
                        "message and finding, written as they are decoded (keys: docs/CONTRACT.md)")
    a.add_argument("--messages", action="store_true",
                   help="text: print the decoded timeline too, each finding marked on its message")
    a.add_argument("--brief", action="store_true",
                   help="text: one line per finding (frame, time, severity, rule.check, blame, session, message) "
                        "and per session, then the totals")
    a.add_argument("--bits", action="store_true",
                   help="text: show flags bit by bit, set or not (default: only the set bits)")
    a.add_argument("-Y", "--filter", metavar="EXPR", dest="display_filter",
                   help="show only the messages matching EXPR in the timeline (--messages, jsonl); findings are "
                        "still computed on every message (the language: docs/FILTER.md)")
    a.add_argument("--port", type=int, action="append", default=[], metavar="N",
                   help="extra TCP port to treat as NBD (repeatable)")
    a.add_argument("--fail-on", choices=("error", "warning", "never"), default="never",
                   help="exit 1 if a finding of at least this severity is reported (for CI)")
    a.add_argument("-o", "--output", metavar="FILE",
                   help="write the report here instead of stdout; a name ending in .html/.htm gets the HTML report "
                        "(sessions, findings explained, plots; docs/REPORTS.md); a name ending in .pcapng instead "
                        "gets the input capture back with every anomaly as a packet comment (the report then goes "
                        "to stdout)")
    a.add_argument("--redact", action="store_true",
                   help="with -o FILE.pcapng: zero read and write data in the written packets (headers kept)")
    a.add_argument("--verify-data", action="store_true",
                   help="also compare read data with earlier writes (stale-read); slower")
    add_time_option(a)
    add_selection_options(a)

    from nbdscope.cli_proxy import add_proxy_options, add_tls_keylog_option

    add_tls_keylog_option(a)

    x = sub.add_parser("proxy", help="transparent relay between an NBD client and server, decoding live")
    add_proxy_options(x, required=True)
    x.add_argument("--tui", action="store_true", help="show the relayed traffic in the terminal UI")
    add_time_option(x)
    add_selection_options(x)

    t = sub.add_parser("tui", help="terminal UI over capture files, a live interface or the proxy")
    t.add_argument("files", nargs="*", metavar="FILE",
                   help="capture file or directory to browse (as for analyze); or give -i, or --listen and --upstream")
    t.add_argument("--port", type=int, action="append", default=[], metavar="N",
                   help="extra TCP port to treat as NBD (repeatable)")
    t.add_argument("-i", "--interface", metavar="IFACE", help="capture live from this interface (tcpdump)")
    t.add_argument("--filter", default="tcp", metavar="BPF", help="with -i: tcpdump capture filter")
    add_proxy_options(t, required=False)
    add_time_option(t)
    add_selection_options(t)

    lv = sub.add_parser("live", help="capture from a network interface and decode live")
    lv.add_argument("-i", "--interface", required=True, metavar="IFACE",
                    help="network interface to capture from (runs tcpdump: needs root or CAP_NET_RAW)")
    lv.add_argument("--port", type=int, action="append", default=[], metavar="N",
                    help="extra TCP port to treat as NBD (repeatable)")
    lv.add_argument("--filter", default="tcp", metavar="BPF", help="tcpdump capture filter")
    lv.add_argument("--buffer", type=int, default=65536, metavar="KIB", help="kernel capture buffer (tcpdump -B)")
    lv.add_argument("--format", choices=("text", "jsonl"), default="text",
                    help="text: one line per message and finding; jsonl: the JSONL timeline of docs/CONTRACT.md")
    lv.add_argument("-Y", "--display-filter", metavar="EXPR", dest="display_filter",
                    help="show only the messages matching EXPR (findings are still computed on every message)")
    lv.add_argument("-o", "--output", metavar="FILE",
                    help="write the timeline here instead of stdout; a name ending in .html/.htm instead gets the "
                         "HTML report (docs/REPORTS.md) when the capture stops")
    lv.add_argument("-w", "--write", metavar="FILE.pcapng",
                    help="also save every captured packet to this pcapng file (like tshark -w), to analyze later")
    lv.add_argument("--fail-on", choices=("error", "warning", "never"), default="never",
                    help="exit 1 at the end if a finding of at least this severity was reported")
    lv.add_argument("--tui", action="store_true", help="show the traffic in the terminal UI")
    add_tls_keylog_option(lv)
    add_time_option(lv)
    add_selection_options(lv)

    add_rules_parser(sub)
    return finish(p)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            try:
                args = _parser().parse_args(argv)  # --help and --version print and exit from here
                command = {"analyze": analyze, "proxy": proxy, "tui": tui, "live": live, "rules": rules}[args.command]
                try:
                    code = command(args)
                except RulesUsageError as exc:
                    raise UsageError(str(exc)) from None
            finally:
                sys.stdout.flush()  # meet a closed pipe here, where it is handled, not at interpreter exit
        except BaseException as exc:
            if _output_closed(exc):
                return EXIT_OK
            raise
        return code
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


def _output_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is a write into a pipe whose reader has gone (`| head`), or was raised while
    handling one (rich exits with status 1; a command may turn it into a UsageError). Then stdout
    is pointed at /dev/null, so what is still buffered there goes nowhere at interpreter exit
    instead of failing again, and the run ends quietly with status 0."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short walk: the pipe error is the exception itself or close behind it
        if seen is None:
            return False
        if isinstance(seen, BrokenPipeError):
            break
        seen = seen.__context__
    else:
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (an in-process caller's capture)
        pass
    return True


def _open_output(stack: ExitStack, path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return stack.enter_context(open(path, "w", encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _open_binary(stack: ExitStack, path: str) -> BinaryIO:
    try:
        return stack.enter_context(open(path, "wb"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def _check_inputs(paths: list[str]) -> list[str]:
    """Refuse unreadable inputs before any output is written; the files to read, in reading order (a
    directory stands for the captures in it, and several files are one capture: capture/rotation.py)."""
    from nbdscope.capture import CaptureError
    from nbdscope.capture.pcapio import STDIN, is_stream, open_capture
    from nbdscope.capture.rotation import capture_set

    if paths.count(STDIN) > 1:
        raise UsageError("standard input (-) can be read only once")
    for path in paths:
        if is_stream(path) or os.path.isdir(path):
            continue  # a pipe: reading would consume it, its errors come when it is read; a directory: below
        try:
            open_capture(path)[0].close()
        except CaptureError as exc:
            raise UsageError(str(exc)) from None
    try:
        return capture_set(paths)
    except CaptureError as exc:
        raise UsageError(str(exc)) from None


def analyze(args: argparse.Namespace) -> int:
    from nbdscope import pipeline
    from nbdscope.capture import CaptureError

    args.files = _check_inputs(args.files)
    annotate = _annotating(args)
    selection = selection_of(args)
    with ExitStack() as stack:
        out = _open_output(stack, None if annotate else args.output)
        addons, redaction = _analyze_addons(args, stack, out, annotate, selection)
        try:
            source = pipeline.FileSource(args.files, args.port, progress=True,
                                         trace=redaction.trace if redaction is not None else None)
            result = pipeline.run(source, addons, verify_data=args.verify_data, selection=selection,
                                  tls_keys=_key_log(args))
        except CaptureError as exc:
            raise UsageError(str(exc)) from None
        _report_failures(result)
    return _exit_code(args.fail_on, result)


def _key_log(args: argparse.Namespace, *, growing: bool = False) -> Any:
    """The key log --tls-keylog names (None: not given); growing: live and the proxy, where the client
    is still writing it."""
    from nbdscope.tls.keylog import KeyLog, KeyLogError

    if getattr(args, "tls_keylog", None) is None:
        return None
    try:
        return KeyLog(args.tls_keylog, growing=growing)
    except KeyLogError as exc:
        raise UsageError(str(exc)) from None


def _annotating(args: argparse.Namespace) -> bool:
    """Whether -o names an annotated capture (FILE.pcapng), refusing the combinations that cannot work."""
    annotate: bool = args.output is not None and args.output.lower().endswith(".pcapng")
    if annotate and len(args.files) != 1:
        raise UsageError(f"{args.output}: an annotated capture is written from exactly one input file, "
                         f"not {len(args.files)}")
    if args.redact and not annotate:
        raise UsageError("--redact applies to an annotated capture: add -o FILE.pcapng")
    if annotate and os.path.exists(args.output) and os.path.samefile(args.output, args.files[0]):
        raise UsageError(f"{args.output}: refusing to overwrite the input capture")
    return annotate


def _analyze_addons(args: argparse.Namespace, stack: ExitStack, out: IO[str],
                    annotate: bool, selection: Any = None) -> tuple[list[Addon], FrameRedaction | None]:
    """The outputs analyze writes, as addons, in the order they see each message; and the redaction
    the file source must trace for, if the annotated capture is redacted."""
    from nbdscope.report import outputs
    from nbdscope.report.captures import AnnotatedCapture

    addons: list[Addon] = []
    timeline: outputs.JsonlLines | outputs.TimelineLines | None = None
    spool: IO[str] | None = None
    redaction = None
    if args.format == "jsonl":
        timeline = outputs.JsonlLines(out, inputs=args.files)
    elif args.format == "text" and args.messages:
        # kept aside until the run ends, so that the report's heading and legend come first
        spool = stack.enter_context(tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, mode="w+", encoding="utf-8"))
        timeline = outputs.TimelineLines(spool, findings=True, time=args.time, legend=False)
    elif args.display_filter is not None and not (args.format == "text" and args.brief):
        raise UsageError("-Y filters the timeline: add --messages or --brief, or use --format jsonl")
    if timeline is not None:
        addons.append(_filtered(timeline, args.display_filter))
    shown = None
    if args.format == "text" and args.brief and args.display_filter is not None:
        shown = outputs.FindingsShown()  # --brief lists the findings of the messages -Y keeps
        addons.append(_filtered(shown, args.display_filter))
    if annotate:
        try:
            annotated = stack.enter_context(open(args.output, "wb"))
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write: {exc.strerror}") from None
        redaction = AnnotatedCapture.new_redaction() if args.redact else None
        addons.append(AnnotatedCapture(args.files[0], annotated, redaction))
    if _html_output(args):
        from nbdscope.report.html import HtmlReport

        addons.append(HtmlReport(out, args.files, selection))
    elif args.format == "json":
        addons.append(outputs.JsonReport(out, args.files, selection))
    elif args.format == "text":
        addons.append(outputs.TextReport(out, args.files, selection, timeline=spool, brief=args.brief,
                                         bits=args.bits, time=args.time, shown=shown))
    return addons, redaction


def _html_output(args: argparse.Namespace) -> bool:
    """Whether -o names an HTML report (FILE.html, FILE.htm), which takes the text report's place."""
    if args.output is None or not args.output.lower().endswith((".html", ".htm")):
        return False
    if args.format != "text" or args.messages:
        raise UsageError(f"{args.output}: the HTML report replaces the text report; drop --format/--messages")
    return True


def _filtered(writer: Any, expr: str | None) -> Addon:
    """The timeline writer, behind the -Y filter if one was given (a bad expression is a usage error)."""
    if expr is None:
        return writer  # type: ignore[no-any-return]
    from nbdscope.filter import FilterError
    from nbdscope.report.outputs import Filtered

    try:
        return Filtered(writer, expr)
    except FilterError as exc:
        raise UsageError(f"-Y {expr!r}: {exc}") from None


def _report_failures(result: Result) -> None:
    """Damaged input and addons that failed, one line each on stderr (the reports carry them too)."""
    for problem in result.problems:
        print(f"nbdscope: warning: {problem.source}: frame {problem.frame}: {problem.message}; "
              "results up to there are kept", file=sys.stderr)
    for a in result.internal_errors():
        print(f"nbdscope: internal error: {a.message}", file=sys.stderr)


def _exit_code(fail_on: str, result: Result) -> int:
    if fail_on == "never":
        return EXIT_OK
    threshold = SEVERITY_RANK[fail_on]
    # --fail-on judges the peers and the capture; a failure of nbdscope's own is reported, not counted
    return EXIT_ANOMALY if any(SEVERITY_RANK[a.severity] >= threshold and a.rule != INTERNAL_ERROR.id
                               for a in result.anomalies) else EXIT_OK


def proxy(args: argparse.Namespace) -> int:
    from nbdscope.cli_proxy import ProxyPlan, run_proxy

    try:
        plan = ProxyPlan.from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plan.selection = selection_of(args)
    plan.tls_keys = _key_log(args, growing=True)
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
        args.files = _check_inputs(args.files)
        keys = _key_log(args)
        return _run_tui(lambda store, stack: file_producer(store, args.files, args.port, selection=selection,
                                                           tls_keys=keys), time_mode=args.time)
    keys = _key_log(args, growing=True)
    if args.interface:
        return _run_tui(lambda store, stack: _live_producer(store, args.interface, args.port, args.filter, 65536,
                                                            selection, keys), time_mode=args.time)
    from nbdscope.cli_proxy import ProxyPlan

    if not (args.listen and args.upstream):
        raise UsageError("the proxy needs both --listen and --upstream")
    try:
        plan = ProxyPlan.from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plan.selection = selection
    plan.tls_keys = keys
    return _run_tui(lambda store, stack: _proxy_producer(plan, store, stack), time_mode=args.time)


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
    keys = _key_log(args, growing=True)
    if args.tui:
        return _run_tui(lambda store, stack: _live_producer(store, args.interface, args.port, args.filter,
                                                            args.buffer, selection, keys), time_mode=args.time)
    with ExitStack() as stack:
        save = _open_binary(stack, args.write) if args.write else None
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
        out = _open_output(stack, None if page else args.output)
        addon: Addon = (outputs.JsonlLines(out, flush=True) if args.format == "jsonl"
                        else outputs.TimelineLines(out, findings=True, flush=True, time=args.time))
        addons = [_filtered(addon, args.display_filter)]
        if page is not None:  # the HTML report, written when the capture stops; the timeline stays on stdout
            from nbdscope.report.html import HtmlReport

            addons.append(HtmlReport(_open_output(stack, page), [source.label], selection))
        result = pipeline.run(source, addons, selection=selection, tls_keys=keys)
    silenced = f" ({sum(result.silenced.values())} silenced)" if result.silenced else ""
    print(f"nbdscope live: {plural(len(result.sessions), 'session')}, {plural(len(result.anomalies), 'anomaly')}"
          f"{silenced}, {plural(source.dropped, 'packet')} dropped by the kernel", file=sys.stderr, flush=True)
    _report_failures(result)
    return _exit_code(args.fail_on, result)


def rules(args: argparse.Namespace) -> int:
    from nbdscope.cli_rules import rules as run_rules

    return run_rules(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
