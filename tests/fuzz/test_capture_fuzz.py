"""Corrupt capture files never raise out of the reader or the engine: damage ends
reading with a CaptureProblem and whatever came before is kept."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from nbdscope.analysis.engine import Engine
from nbdscope.capture import CaptureError, read_captures
from tests.oracles import CAPTURES

SOURCES = [(CAPTURES / name).read_bytes() for name in ("seed-unaligned-extent.pcap", "ipv6.pcapng",
                                                      "linux-cooked-any.pcap")]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(SOURCES))), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)),
                                                      max_size=12), st.integers(0, 1 << 20))
def test_mutated_captures_never_raise(which: int, flips: list[tuple[int, int]], cut: int) -> None:
    blob = bytearray(SOURCES[which])
    for pos, value in flips:
        blob[pos % len(blob)] = value
    blob = blob[: max(1, cut % (len(blob) + 1))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.pcap"
        path.write_bytes(bytes(blob))
        try:
            Engine(verify_data=True).run(read_captures([str(path)]))
        except CaptureError:
            pass  # not a capture at all: refused up front, which is the contract
