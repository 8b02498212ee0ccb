"""The compiled path changes nothing the proxy writes: the tap records of every shipped capture, read by
the proxy's TapReader with and without the compiled path (NBDSCOPE_PURE=1), give byte-identical JSONL,
console findings (--quiet) and totals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nbdscope.analysis.engine import Engine
from nbdscope.proxy import tap
from nbdscope.proxy.source import TapReader
from nbdscope.report.outputs import JsonlLines, JsonReport, TimelineLines
from tests.bothways import _pure, built
from tests.contract.outputs import SHIPPED, tap_records
from tests.oracles import CAPTURES

pytestmark = pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built")


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


@pytest.mark.parametrize("most", [0, 200_000], ids=["as-captured", "coalesced"])
@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_the_proxy_writes_the_same_both_ways(capture: Path, most: int) -> None:
    records = tap_records(capture)
    if most:
        records = coalesced(records, most)
    pure, native = watch(records, pure=True), watch(records, pure=False)
    assert pure[3] == 0
    assert pure[0], "no JSONL"
    assert native[:3] == pure[:3]


@pytest.mark.parametrize("most", [0, 200_000], ids=["as-captured", "coalesced"])
def test_the_comparison_exercises_the_compiled_path(most: int) -> None:
    records = tap_records(CAPTURES / "fio-iodepth8.pcap")
    if most:
        records = coalesced(records, most)
    assert watch(records, pure=False)[3] > 300


def test_a_console_with_message_lines_keeps_python() -> None:
    jsonl, text = io.BytesIO(), io.StringIO()
    reader = TapReader(log=lambda line: None)
    engine = Engine([JsonlLines(jsonl), TimelineLines(text, findings=True)])  # type: ignore[arg-type]
    with _pure(False):
        reader.accelerate(engine)
    assert reader.native is None
