"""--verify-data on the compiled path (nbdscope/fastpath.py): the Scanner takes reads only while no write
to their export has been acknowledged, and hands every connection of an export back the moment one is,
so a stale read on another connection is still judged. Built captures, since no real server can be made
to return stale data on cue; the verdicts come from the spec ("Ordering of messages and writes",
NBD_FLAG_CAN_MULTI_CONN), not from nbdscope's own output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import nbdwire as w
from tests.bothways import both, built, taken
from tests.pcapbuild import Flow, frame, write_pcap
from tests.wirescripts import handshake

pytestmark = pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built")

READ, WRITE, FUA = 0, 1, 1
MULTI_CONN = 0x14D  # HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_WRITE_ZEROES, CAN_MULTI_CONN (bit 8)
WRITTEN = b"\xaa" * 4096


def _reads(first: int, n: int, offset: int = 65536) -> list[tuple[str, bytes]]:
    out = []
    for cookie in range(first, first + n):
        out += [("c2s", w.request(READ, cookie, offset, 4096)), ("s2c", w.simple_reply(cookie, 0, bytes(4096)))]
    return out


def _capture(path: Path, stale: bool, write: bool = True) -> None:
    """Two connections to one export: A reads on and on; B writes 0xaa at offset 0 with FUA (acknowledged;
    not without ``write``), then A reads offset 0 and gets zeroes (``stale``) or the written bytes."""
    a, b = Flow(cport=40000), Flow(cport=40001)
    packets = a.syn() + b.syn()
    for flow in (a, b):
        packets += [flow.c2s(d) if where == "c2s" else flow.s2c(d) for where, d in handshake(MULTI_CONN, structured=False)]
    packets += [a.c2s(d) if where == "c2s" else a.s2c(d) for where, d in _reads(1, 200)]
    if write:
        packets += [b.c2s(w.request(WRITE, 1, 0, 4096, FUA, WRITTEN)), b.s2c(w.simple_reply(1))]
    answer = bytes(4096) if stale or not write else WRITTEN
    after = _reads(201, 100) + [("c2s", w.request(READ, 301, 0, 4096)), ("s2c", w.simple_reply(301, 0, answer))]
    packets += [a.c2s(d) if where == "c2s" else a.s2c(d) for where, d in after + _reads(302, 100)]
    write_pcap(str(path), [(1.0 + i * 1e-5, frame(1, p)) for i, p in enumerate(packets)])


@pytest.mark.parametrize("stale", [True, False], ids=["stale", "fresh"])
def test_a_write_on_another_connection_brings_the_reader_back(tmp_path: Path, stale: bool) -> None:
    path = tmp_path / "two.pcap"
    _capture(path, stale)
    for mode in ("json", "jsonl", "text"):
        pure, native = both(["--format", mode, "--verify-data", str(path)])
        assert native == pure, mode
    found = [a for a in json.loads(both(["--format", "json", "--verify-data", str(path)])[0][1])
             ["anomalies"] if a["rule"] == "stale-read"]
    if stale:  # s1 read zeroes at 0 after s2's FUA write there was acknowledged, with CAN_MULTI_CONN advertised
        assert [(a["check"], a["session"], a["blame"]) for a in found] == [("stale-read.multi-conn", "s1", "server")]
    else:
        assert found == []
    # the 200 reads before the write went the compiled way, the 201 after it did not (a plain run takes them)
    assert 300 < taken([str(path)], verify_data=True) <= 400 < taken([str(path)])


def test_a_plain_write_is_left_to_python(tmp_path: Path) -> None:
    """One connection, steady on reads (taken natively), then a write with no flags, which the Scanner could
    take as it takes it without --verify-data: it must not, since the shadow disk needs the written data. A
    read of the same place then returns zeroes on the same connection: stale-read.same-connection."""
    a = Flow()
    packets = a.syn() + [a.c2s(d) if where == "c2s" else a.s2c(d)
                         for where, d in handshake(MULTI_CONN, structured=False)]
    script = _reads(1, 200) + [("c2s", w.request(WRITE, 201, 0, 4096, 0, WRITTEN)), ("s2c", w.simple_reply(201)),
                               ("c2s", w.request(READ, 202, 0, 4096)), ("s2c", w.simple_reply(202, 0, bytes(4096)))]
    packets += [a.c2s(d) if where == "c2s" else a.s2c(d) for where, d in script + _reads(203, 50)]
    path = tmp_path / "one.pcap"
    write_pcap(str(path), [(1.0 + i * 1e-5, frame(1, p)) for i, p in enumerate(packets)])
    pure, native = both(["--format", "json", "--verify-data", str(path)])
    assert native == pure
    found = [(f["check"], f["session"], f["blame"]) for f in json.loads(pure[1])["anomalies"]
             if f["rule"] == "stale-read"]
    assert found == [("stale-read.same-connection", "s1", "server")]
    assert taken([str(path)], verify_data=True) > 300  # the reads before the write went the compiled way


def test_no_writes_no_cost(tmp_path: Path) -> None:
    """A capture with no writes: --verify-data leaves the compiled path as much as a plain run does."""
    path = tmp_path / "reads.pcap"
    _capture(path, stale=False, write=False)
    plain = taken([str(path)])
    assert plain > 700 and taken([str(path)], verify_data=True) == plain
    pure, native = both(["--format", "json", "--verify-data", str(path)])
    assert native == pure
