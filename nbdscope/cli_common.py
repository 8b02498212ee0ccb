"""What every command of the command line shares: the usage error and exit codes, opening inputs
and outputs, the key log, the -Y filter, and how a run ends (damage and internal errors reported,
the exit code by --fail-on)."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from typing import IO, Any, BinaryIO

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.anomaly import INTERNAL_ERROR, SEVERITY_RANK
from nbdscope.analysis.engine import Result

EXIT_OK, EXIT_ANOMALY, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, exit 2."""


def open_output(stack: ExitStack, path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return stack.enter_context(open(path, "w", encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def open_binary(stack: ExitStack, path: str) -> BinaryIO:
    try:
        return stack.enter_context(open(path, "wb"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def check_inputs(paths: list[str]) -> list[str]:
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


def key_log(args: argparse.Namespace, *, growing: bool = False) -> Any:
    """The key log --tls-keylog names (None: not given); growing: live and the proxy, where the client
    is still writing it."""
    from nbdscope.tls.keylog import KeyLog, KeyLogError

    if getattr(args, "tls_keylog", None) is None:
        return None
    try:
        return KeyLog(args.tls_keylog, growing=growing)
    except KeyLogError as exc:
        raise UsageError(str(exc)) from None


def filtered(writer: Any, expr: str | None) -> Addon:
    """The timeline writer, behind the -Y filter if one was given (a bad expression is a usage error)."""
    if expr is None:
        return writer  # type: ignore[no-any-return]
    from nbdscope.filter import FilterError
    from nbdscope.report.outputs import Filtered

    try:
        return Filtered(writer, expr)
    except FilterError as exc:
        raise UsageError(f"-Y {expr!r}: {exc}") from None


def report_failures(result: Result) -> None:
    """Damaged input and addons that failed, one line each on stderr (the reports carry them too)."""
    for problem in result.problems:
        print(f"nbdscope: warning: {problem.source}: frame {problem.frame}: {problem.message}; "
              "results up to there are kept", file=sys.stderr)
    for a in result.internal_errors():
        print(f"nbdscope: internal error: {a.message}", file=sys.stderr)


def exit_code(fail_on: str, result: Result) -> int:
    if fail_on == "never":
        return EXIT_OK
    threshold = SEVERITY_RANK[fail_on]
    # --fail-on judges the peers and the capture; a failure of nbdscope's own is reported, not counted
    return EXIT_ANOMALY if any(SEVERITY_RANK[a.severity] >= threshold and a.rule != INTERNAL_ERROR.id
                               for a in result.anomalies) else EXIT_OK
