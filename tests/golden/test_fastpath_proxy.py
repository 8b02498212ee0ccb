"""The compiled path changes nothing the proxy writes: the tap records of every shipped capture, read by
the proxy's TapReader with and without the compiled path (NBDSCOPE_PURE=1), give byte-identical JSONL,
console findings (--quiet) and totals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nbdscope.analysis.engine import Engine
from nbdscope.proxy.source import TapReader
from nbdscope.report.outputs import JsonlLines, TimelineLines
from tests.bothways import _pure, built
from tests.contract.outputs import SHIPPED, tap_records
from tests.oracles import CAPTURES
from tests.tapreplay import coalesced, watch

pytestmark = pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built")


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
