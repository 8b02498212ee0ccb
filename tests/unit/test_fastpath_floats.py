"""The Scanner prints times and latencies itself (digits, no float conversion) where the shortest repr is the
rounded decimal: its text must be what the JSONL writer prints (orjson) for the same rounded value."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.bothways import built

pytestmark = pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built")


def _scanner(x: float, digits: int) -> bytes:
    from nbdscope import _fastpath  # type: ignore[attr-defined]

    return _fastpath.format(x, digits, orjson.dumps)  # type: ignore[no-any-return]


def _writer(x: float, digits: int) -> bytes:
    """As report/records.py rounds times (to microseconds through an integer); latencies come rounded."""
    return orjson.dumps(round(x * 1e6) / 1e6 if digits == 6 else x)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_times_as_the_writer_prints_them(x: float) -> None:
    assert _scanner(x, 6) == _writer(x, 6)


@given(st.integers(min_value=0, max_value=10**13))
def test_latencies_as_the_writer_prints_them(k: int) -> None:
    x = k / 10
    assert _scanner(x, 1) == _writer(x, 1)


@pytest.mark.parametrize("x", [0.0, 0.000001, 0.0001, 0.00009, 1.5, 1795362434.990266, 1795362434.1, 2147483647.999999,
                               2147483648.000001, 4294967296.5, 1e15 + 0.5, 12.0000005])
def test_edges(x: float) -> None:
    assert _scanner(x, 6) == _writer(x, 6)
    assert _scanner(round(x, 1), 1) == _writer(round(x, 1), 1)
