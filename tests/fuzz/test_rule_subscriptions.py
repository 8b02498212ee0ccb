"""Rules subscribe to requests and replies per command (Rule.FOR_COMMANDS) so the
engine can skip calls that cannot matter. That must never lose or change a
finding: every stream here is analysed twice, once with the subscriptions and
once with every rule called for every event its EVENTS names, and the findings
must be identical."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine
from nbdscope.analysis.rules import ALL_RULES
from nbdscope.analysis.rules.base import Rule
from nbdscope.capture import read_captures
from nbdscope.decoder import events as ev
from tests import nbdwire as w
from tests.oracles import CAPTURES
from tests.wirescripts import handshake

DONE = 1


@contextmanager
def every_rule_hears_everything() -> Iterator[None]:
    """The reference: each rule called for every event of the types it lists, whatever the command."""
    saved = {cls: cls.__dict__["subscribes"] for cls in (Rule, *ALL_RULES) if "subscribes" in cls.__dict__}

    def wants(cls: type[Rule], event_type: type[ev.Event], command: int | None) -> bool:
        return issubclass(event_type, cls.EVENTS)

    for cls in saved:
        cls.subscribes = classmethod(wants)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for cls, original in saved.items():
            cls.subscribes = original  # type: ignore[method-assign]


def findings(items: list[it.StreamItem]) -> list[tuple[str, int, str]]:
    result = Engine().run(items)
    return [(a.rule, a.frame, a.message) for a in result.anomalies]


def both(items: list[it.StreamItem]) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    subscribed = findings(items)
    with every_rule_hears_everything():
        reference = findings(items)
    return subscribed, reference


def session(script: list[tuple[str, bytes]]) -> list[it.StreamItem]:
    items: list[it.StreamItem] = [it.StreamOpen(conn=0, client=it.Endpoint("127.0.0.1", 40000),
                                                server=it.Endpoint("127.0.0.1", 10809), frame=0, time=0.0,
                                                saw_start=True, source="t.pcap")]
    for frame, (direction, data) in enumerate(script, 1):
        items.append(it.StreamData(conn=0, dir=direction, data=data, frame=frame, time=frame / 1000))  # type: ignore[arg-type]
    return items


# requests of every defined command and two undefined ones, with any flags; replies of every
# shape to cookies that may or may not be in flight (so reuse, double replies and strays occur)
commands = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 42])
cookies = st.integers(1, 4)
requests = st.builds(lambda cmd, cookie, offset, length, flags: ("c2s", w.request(
    cmd, cookie, offset, length, flags, bytes(length) if cmd == 1 else b"")),
    commands, cookies, st.sampled_from([0, 512, 1000, 1 << 20, 1 << 30]), st.sampled_from([0, 100, 512, 4096]),
    st.sampled_from([0, 1, 2, 4, 8, 16, 32, 0x80]))
simple = st.builds(lambda cookie, error: ("s2c", w.simple_reply(cookie, error)), cookies, st.sampled_from([0, 1, 22]))
chunks = st.builds(lambda cookie, rtype, payload, flags: ("s2c", w.chunk(cookie, rtype, payload, flags)), cookies,
                   st.sampled_from([0, 1, 2, 5, 0x8001, 0x8002]),
                   st.sampled_from([b"", (0).to_bytes(8, "big") + bytes(100), (512).to_bytes(8, "big") + bytes(4),
                                    w.extents(1, [(512, 0), (100, 1)]), w.error_payload(5, "no")]),
                   st.sampled_from([0, DONE]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0x1FF, 0x1 | 0x2, 0x1 | 0x100, 0x1 | 0x400]), st.booleans(),
       st.lists(st.one_of(requests, simple, chunks), max_size=30))
def test_subscriptions_lose_no_finding(tflags: int, blocks: bool, messages: list[tuple[str, bytes]]) -> None:
    items = session(handshake(tflags, block=(512, 4096, 1 << 25) if blocks else None) + messages)
    subscribed, reference = both(items)
    assert subscribed == reference


@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng")))
def test_subscriptions_lose_no_finding_in_shipped_captures(name: str) -> None:
    items = list(read_captures([str(CAPTURES / name)]))
    subscribed, reference = both(items)
    assert subscribed == reference
