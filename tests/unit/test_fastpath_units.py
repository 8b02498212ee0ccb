"""The pieces of the compiled per-message path that outputs depend on digit by digit, and its refusals
of bad input (tests/golden/test_fastpath.py and tests/fuzz/test_fastpath_fuzz.py run it whole)."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdscope import fastpath
from nbdscope.analysis.addons import Addon
from nbdscope.analysis.engine import Engine
from nbdscope.fastpath_lines import templates
from nbdscope.report.outputs import JsonlLines

native = pytest.importorskip("nbdscope._fastpath")

FINITE = st.floats(allow_nan=False, allow_infinity=False)
TIMES = st.one_of(FINITE, st.floats(-1e7, 1e7), st.integers(-10**9, 10**9).map(lambda n: n / 1000))


@given(TIMES)
def test_latencies_round_as_python_does(x: float) -> None:
    assert math.copysign(1, native.round(x, 1)) == math.copysign(1, round(x, 1))
    assert native.round(x, 1) == round(x, 1)


@given(TIMES)
def test_relative_times_round_as_python_does(x: float) -> None:
    assert repr(native.round(x, 6)) == repr(round(x, 6))


def test_templates_come_from_the_writer() -> None:
    made = templates("s1", "transmission", 1.7e9)
    assert made is not None and len(made) == 5
    read = b"".join(lit for lit, _ in made[0])
    assert b'"type":"NBD_CMD_READ"' in read and b'"session":"s1"' in read


def test_a_session_id_that_needs_escaping() -> None:
    made = templates('s"1\u00e9', "transmission", 0.0)
    assert made is None or orjson.dumps('s"1\u00e9') in made[0][0][0]


class _Everything(Addon):
    def message(self, session: object, event: object) -> None:
        pass


class _Payloads(Addon):
    """Wants every read and write payload (the decoder then gathers them all; the Scanner skips them)."""

    NEEDS = frozenset({"data"})


def test_an_addon_hearing_every_message_keeps_python_on() -> None:
    assert fastpath.engine_allows(Engine())
    with open("/dev/null", "w") as sink:
        assert fastpath.engine_allows(Engine([JsonlLines(sink)]))
    assert not fastpath.engine_allows(Engine([_Everything()]))
    assert fastpath.engine_allows(Engine(verify_data=True))  # stale-read is quiet while nothing is written
    assert not fastpath.engine_allows(Engine([_Payloads()]))  # an addon needing every payload


def test_bad_calls_are_refused() -> None:
    scanner = native.Scanner(True, False, 14, 12, 1, 2, 3, 0, 1, 1, 1, lambda slot: None)
    with pytest.raises(KeyError):
        scanner.release(0)
    with pytest.raises(ValueError):
        scanner.scan(bytearray(10), 0, 11, 0)
    with pytest.raises(ValueError):
        scanner.adopt(1, (b"short", 0, 0, 0, 0), (b"x" * 12, 0, 0, 0, 0), 0, (-1, 0, 1, 1, 1, 0, 1, False, True),
                      [], None)
    with pytest.raises(ValueError):  # JSONL templates before an output for them
        scanner.adopt(1, (b"x" * 12, 0, 0, 0, 0), (b"y" * 12, 0, 0, 0, 0), 0, (-1, 0, 1, 1, 1, 0, 1, False, True),
                      [], ((), (), (), (), ()))
    with pytest.raises(ValueError):
        native.Scanner(True, False, 14, 40, 1, 2, 3, 0, 1, 1, 1, print)  # the ethertype past the IP header
