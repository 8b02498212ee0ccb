"""The compiled per-message path changes no output: every shipped capture, analyzed in each output
format and with --verify-data, prints byte for byte what the pure-Python path prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bothways import both, built, taken
from tests.oracles import CAPTURES

ALL = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))
MODES = {"json": ["--format", "json"], "jsonl": ["--format", "jsonl"], "text": ["--format", "text"],
         "messages": ["--messages"], "verify-data": ["--format", "json", "--verify-data"]}

pytestmark = pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("capture", ALL, ids=lambda p: p.name)
def test_same_output_both_ways(capture: Path, mode: str) -> None:
    pure, native = both([*MODES[mode], str(capture)])
    assert pure[1], "no output"
    assert native == pure


def test_the_comparison_exercises_the_compiled_path() -> None:
    """Not two pure-Python runs: the fio capture is mostly READ and WRITE traffic the compiled path takes."""
    fio = str(CAPTURES / "fio-iodepth8.pcap")
    assert taken([fio]) > 300
    assert taken([fio], jsonl=True) > 300  # its JSONL templates match the writer's lines (epoch included)
    assert taken([str(CAPTURES / "ipv6.pcapng")]) == 0  # pcapng: the pure-Python path throughout


def test_a_rotating_set_both_ways() -> None:
    pieces = [str(CAPTURES / "fio-iodepth8.pcap"), str(CAPTURES / "nbdcopy-4conn-nbdkit-memory.pcap")]
    pure, native = both(["--format", "json", *pieces])
    assert native == pure
