"""The `nbdscope` command line (names as in docs/CONTRACT.md)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any

from nbdscope import __version__
from nbdscope.analysis.addons import Addon
from nbdscope.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    check_inputs,
    exit_code,
    filtered,
    key_log,
    open_output,
    report_failures,
)
from nbdscope.cli_help import finish
from nbdscope.cli_live import live, proxy, tui
from nbdscope.cli_rules import RulesUsageError, add_rules_parser, add_selection_options, selection_of
from nbdscope.report.clock import add_time_option

if TYPE_CHECKING:
    from nbdscope.capture.pcapio.redact import FrameRedaction

SPOOL_IN_MEMORY = 8 << 20  # the --messages timeline is kept in memory up to this, then in a temporary file




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








def analyze(args: argparse.Namespace) -> int:
    from nbdscope import pipeline
    from nbdscope.capture import CaptureError

    args.files = check_inputs(args.files)
    annotate = _annotating(args)
    selection = selection_of(args)
    with ExitStack() as stack:
        out = open_output(stack, None if annotate else args.output)
        addons, redaction = _analyze_addons(args, stack, out, annotate, selection)
        try:
            source = pipeline.FileSource(args.files, args.port, progress=True,
                                         trace=redaction.trace if redaction is not None else None)
            result = pipeline.run(source, addons, verify_data=args.verify_data, selection=selection,
                                  tls_keys=key_log(args))
        except CaptureError as exc:
            raise UsageError(str(exc)) from None
        report_failures(result)
    return exit_code(args.fail_on, result)




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
    from nbdscope.report import final, outputs
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
        addons.append(filtered(timeline, args.display_filter))
    shown = None
    if args.format == "text" and args.brief and args.display_filter is not None:
        shown = outputs.FindingsShown()  # --brief lists the findings of the messages -Y keeps
        addons.append(filtered(shown, args.display_filter))
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
        addons.append(final.JsonReport(out, args.files, selection))
    elif args.format == "text":
        addons.append(final.TextReport(out, args.files, selection, timeline=spool, brief=args.brief,
                                         bits=args.bits, time=args.time, shown=shown))
    return addons, redaction


def _html_output(args: argparse.Namespace) -> bool:
    """Whether -o names an HTML report (FILE.html, FILE.htm), which takes the text report's place."""
    if args.output is None or not args.output.lower().endswith((".html", ".htm")):
        return False
    if args.format != "text" or args.messages:
        raise UsageError(f"{args.output}: the HTML report replaces the text report; drop --format/--messages")
    return True




















def rules(args: argparse.Namespace) -> int:
    from nbdscope.cli_rules import rules as run_rules

    return run_rules(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
