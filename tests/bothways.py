"""Run `nbdscope analyze` in-process twice, on the pure-Python path (NBDSCOPE_PURE=1) and with the
compiled per-message path (nbdscope/fastpath.py), for the tests that require both to print the same.

``taken`` says how many messages the compiled path took in a run, so a test can tell that the
comparison exercised it and was not two pure-Python runs."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from nbdscope import cli, fastpath, pipeline
from nbdscope.analysis.engine import Engine
from nbdscope.vocab import StreamClose


@contextmanager
def _pure(on: bool) -> Iterator[None]:
    before = os.environ.get("NBDSCOPE_PURE")
    if on:
        os.environ["NBDSCOPE_PURE"] = "1"
    else:
        os.environ.pop("NBDSCOPE_PURE", None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NBDSCOPE_PURE", None)
        else:
            os.environ["NBDSCOPE_PURE"] = before


def analyze(args: list[str], *, pure: bool) -> tuple[int, str]:
    """Exit code and standard output of `nbdscope analyze ARGS`."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    saved = sys.stdout
    sys.stdout = out
    try:
        with _pure(pure):
            code = cli.main(["analyze", *args])
        out.flush()
    finally:
        sys.stdout = saved
    return code, out.buffer.getvalue().decode()  # type: ignore[attr-defined]


def both(args: list[str]) -> tuple[tuple[int, str], tuple[int, str]]:
    return analyze(args, pure=True), analyze(args, pure=False)


def taken(paths: list[str], *, jsonl: bool = False, verify_data: bool = False) -> int:
    """Messages the compiled path takes in a default analysis of these captures (0 where it cannot run);
    ``jsonl``: with the JSONL writer attached, whose lines the compiled path then writes itself;
    ``verify_data``: as ``analyze --verify-data``."""
    from nbdscope.report.outputs import JsonlLines

    with _pure(False), open(os.devnull, "wb") as sink:
        source = pipeline.FileSource(paths)
        engine = Engine([JsonlLines(sink)] if jsonl else [], verify_data=verify_data)
        source.accelerate(engine)
        engine.run(source.items())
    return source.native.taken if source.native is not None else 0


def built() -> bool:
    return fastpath._fastpath is not None


def open_state(paths: list[str], *, pure: bool) -> list[tuple[object, ...]]:
    """What the sessions hold when the first connection closes, before the engine closes it: the requests
    in flight (whole events, sequence numbers and spans included), the decoder's table, recent cookies,
    message counts and counters."""
    with _pure(pure):
        source = pipeline.FileSource(paths)
        engine = Engine()
        source.accelerate(engine)
        for item in source.items():
            if isinstance(item, StreamClose):
                break  # (the compiled path gave every connection back before any closes)
            engine.feed(item)
    out: list[tuple[object, ...]] = []
    for session, conn in engine._open.values():
        out.append((list(session.in_flight.items()), dict(conn.flights._table), dict(session.recent),
                    session.messages, session.last_frame, conn.next_seq(), conn._c.fed, conn._s.fed,
                    {k: (v.count, v.bytes, list(v.samples), v.max_latency) for k, v in session.commands.items()}))
    return out
