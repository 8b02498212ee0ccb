"""Replaying tap records through the proxy's TapReader, with or without the compiled path, for the tests that
require both to write the same (tests/golden/test_fastpath_proxy.py, tests/interop/test_proxy_fastpath.py)."""

from __future__ import annotations

import io

from nbdscope.analysis.engine import Engine
from nbdscope.proxy import tap
from nbdscope.proxy.source import TapReader
from nbdscope.report.final import JsonReport
from nbdscope.report.outputs import JsonlLines, TimelineLines
from tests.bothways import _pure


def coalesced(records: list[tap.Record], most: int) -> list[tap.Record]:
    """The same bytes in fewer, larger data records (a relay that read more at once), up to ``most`` bytes
    each: records of many segments, whose messages cross segment boundaries."""
    out: list[tap.Record] = []
    for rec in records:
        kind, direction, conn, _, payload = rec
        if out and kind == tap.DATA and out[-1][0] == tap.DATA and out[-1][1:3] == (direction, conn) \
                and len(out[-1][4]) + len(payload) <= most:
            out[-1] = (kind, direction, conn, out[-1][3], memoryview(bytes(out[-1][4]) + bytes(payload)))
        else:
            out.append(rec)
    return out


def watch(records: list[tap.Record], *, pure: bool, console: bool = True) -> tuple[bytes, str, str, int]:
    """What the proxy's watcher writes for these records: JSONL, the --quiet console, the per-session
    totals and a JSON report of the run; and how many messages the compiled path took."""
    jsonl, text, report = io.BytesIO(), io.StringIO(), io.StringIO()
    addons = [JsonlLines(jsonl), JsonReport(report, ["proxy"])]
    if console:
        addons.append(TimelineLines(text, findings=True, messages=False))  # type: ignore[arg-type]
    reader = TapReader(log=lambda line: None)
    engine = Engine(addons)  # type: ignore[arg-type]
    with _pure(pure):
        reader.accelerate(engine)
    result = engine.run(reader.items(records))
    totals = repr([(s.id, s.messages, s.last_frame,
                    sorted((k, v.count, v.bytes, list(v.samples), v.max_latency) for k, v in s.commands.items()))
                   for s in result.sessions]) + report.getvalue()
    return jsonl.getvalue(), text.getvalue(), totals, reader.native.taken if reader.native is not None else 0
