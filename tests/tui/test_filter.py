"""The filter language, on real captures; expected rows are worked out from the
decoder events directly, not from the filter code."""

from __future__ import annotations

import pytest

from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd, Errno
from nbdscope.tui.filter import FilterError, compile_filter
from tests.tui.helpers import loaded_store


def rows(store, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    pred = compile_filter(text)
    assert pred is not None
    return [r for r in range(len(store)) if pred(store, r)]


@pytest.fixture(scope="module")
def cache_store():  # type: ignore[no-untyped-def]
    return loaded_store("seed-cache-flag.pcap")


def test_command_matches_request_and_its_reply(cache_store) -> None:  # type: ignore[no-untyped-def]
    got = rows(cache_store, "cmd=cache")
    # the capture's README: one NBD_CMD_CACHE, refused by nbdkit with EINVAL
    assert len(got) == 2
    req, rep = (cache_store.events[r] for r in got)
    assert isinstance(req, ev.Request) and req.command == Cmd.CACHE
    assert isinstance(rep, ev.SimpleReply) and rep.cookie == req.cookie and rep.error == Errno.EINVAL
    assert rows(cache_store, "errors") == [got[1]]
    assert rows(cache_store, "error=EINVAL") == [got[1]]
    assert rows(cache_store, "cmd=cache and requests") == [got[0]]
    assert rows(cache_store, "cache c2s") == [got[0]]


def test_session_direction_and_negation(cache_store) -> None:  # type: ignore[no-untyped-def]
    store = cache_store
    s2 = [r for r in range(len(store)) if store.session_id(r) == "s2"]
    assert s2 and rows(store, "session=s2") == s2 and rows(store, "s2") == s2 and rows(store, "session=2") == s2
    c2s = [r for r in range(len(store)) if store.events[r].dir == "c2s"]
    assert rows(store, "dir=c2s") == c2s
    assert sorted(rows(store, "not dir=c2s") + c2s) == list(range(len(store)))
    assert rows(store, "s1 or s2") == list(range(len(store)))


def test_numbers_ranges_and_anomalies(cache_store) -> None:  # type: ignore[no-untyped-def]
    store = cache_store
    writes = [r for r in range(len(store)) if isinstance(store.events[r], ev.Request)
              and store.events[r].command == Cmd.WRITE]
    assert len(writes) == 1  # the second connection writes 512 bytes (captures/README.md)
    assert store.events[writes[0]].length == 512
    assert set(writes) <= set(rows(store, "length=0x200"))
    assert set(writes) <= set(rows(store, "length=0.5K requests"))
    assert rows(store, "cmd=write and length>512") == []
    anomalous = rows(store, "anomalies")
    assert anomalous and all(store.marks[r] for r in anomalous)
    flagged = rows(store, "rule=cache-flag-mismatch")
    assert flagged and all(store.events[r].command == Cmd.CACHE for r in flagged)  # type: ignore[union-attr]
    assert rows(store, "range=0..511 and cmd=write and requests") == writes
    assert len(rows(store, "range=0..511 and cmd=write")) == 2  # and the reply, which covers the same bytes
    assert rows(store, "range=512..1023 and cmd=write") == []
    assert rows(store, "(cmd=read or cmd=write) and requests") == sorted(
        writes + [r for r in range(len(store)) if isinstance(store.events[r], ev.Request)
                  and store.events[r].command == Cmd.READ])


@pytest.mark.parametrize("text,message", [
    ("cookie=", "ends too early"),
    ("cmd=nosuch", "unknown command"),
    ("bogus=1", "unknown field"),
    ("offset=abc", "not a number"),
    ("(read", r"missing \)"),
    ("offset", "needs a comparison"),
    ("dir=up", "c2s or s2c"),
    ("offset=9..1", "empty range"),
])
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(text)


def test_empty_filter_is_everything() -> None:
    assert compile_filter("   ") is None
