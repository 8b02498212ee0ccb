"""The proxy's pcapng, driven through its tap reader without a relay: the reader numbers
frames itself (the same with or without a pcapng, and the same as the written capture
re-analysed), and --redact zeroes exactly the read and write data, headers intact."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.engine import Engine
from nbdscope.capture.linklayer import SYN, tcp_segment
from nbdscope.capture.pcapio import frames
from nbdscope.proxy import tap
from nbdscope.proxy.source import TapReader
from nbdscope.report.captures import RelayedCapture
from nbdscope.report.outputs import JsonlLines
from tests import nbdwire as w
from tests.oracles import ROOT
from tests.wirescripts import go_handshake

READ, WRITE = 0, 1
WRITTEN = bytes(range(1, 256)) * 400  # 102000 bytes: two segments of the made-up TCP
READ_BACK = b"\xaa" * 5000


def conversation() -> list[tuple[str, bytes]]:
    """(direction, chunk) as the relay hands them over; the write arrives in three odd pieces."""
    out = go_handshake(structured=False)
    write = w.request(WRITE, 1, 0, len(WRITTEN), data=WRITTEN)
    out += [("c2s", write[:20]), ("c2s", write[20:70000]), ("c2s", write[70000:]), ("s2c", w.simple_reply(1)),
            ("c2s", w.request(READ, 2, 0, len(READ_BACK))), ("s2c", w.simple_reply(2, data=READ_BACK))]
    return out


def drive(pcapng: io.BytesIO | None, redact: bool) -> tuple[TapReader, bytes]:
    """The proxy's pipeline without a relay: its tap reader gets the records the relay would send."""
    jsonl = io.BytesIO()
    reader = TapReader(log=lambda line: None)
    records: list[tap.Record] = [(tap.OPEN, "c2s", 0, 1000.0, memoryview(json.dumps(
        {"client": ["10.0.0.1", 40000], "server": ["10.0.0.2", 10809]}).encode()))]
    records += [(tap.DATA, direction, 0, 1000.0, memoryview(chunk)) for direction, chunk in conversation()]  # type: ignore[misc]
    records.append((tap.CLOSE, "c2s", 0, 1000.0, memoryview(b"")))
    addons: list[Addon] = [JsonlLines(jsonl)]
    if pcapng is not None:
        addons.append(RelayedCapture(pcapng, redact=redact))
    result = Engine(addons).run(reader.items(records))
    assert not any(a.rule == "internal-error" for a in result.anomalies)
    return reader, jsonl.getvalue()


def data_ranges() -> dict[int, tuple[int, int]]:
    """Stream offsets of the read and write data per TCP source port, from how the test built them."""
    hs = {d: sum(len(c) for dd, c in go_handshake(structured=False) if dd == d) for d in ("c2s", "s2c")}
    return {40000: (hs["c2s"] + 28, hs["c2s"] + 28 + len(WRITTEN)),
            10809: (hs["s2c"] + 16 + 16, hs["s2c"] + 32 + len(READ_BACK))}


def test_redacted_pcapng_zeroes_exactly_the_data_and_frames_are_numbered_by_the_proxy_source(tmp_path: Path) -> None:
    plain_out, red_out = io.BytesIO(), io.BytesIO()
    plain, plain_jsonl = drive(plain_out, redact=False)
    red, _ = drive(red_out, redact=True)
    bare, bare_jsonl = drive(None, redact=False)
    paths = {}
    for name, buf in (("plain", plain_out), ("red", red_out)):
        paths[name] = tmp_path / f"{name}.pcapng"
        paths[name].write_bytes(buf.getvalue())
    before, after = list(frames(str(paths["plain"]), [])), list(frames(str(paths["red"]), []))
    assert plain.frames == red.frames == bare.frames == len(before) == len(after) == 3 + 6 + 4 + 3 + 2  # 69980 bytes take two segments
    assert bare_jsonl == plain_jsonl  # numbering needs no pcapng

    ranges, isn, zeroed = data_ranges(), {}, 0
    for (n, _t, lt, a), (_m, _u, _k, b) in zip(before, after, strict=True):
        a, b = bytes(a), bytes(b)
        seg = tcp_segment(lt, a)
        assert seg is not None and len(a) == len(b)
        if seg.flags & SYN:
            isn[seg.sport] = seg.seq + 1
        lo, hi = ranges[seg.sport]
        for i in range(len(a)):
            off = seg.seq - isn[seg.sport] + i - seg.offset
            data_byte = i >= seg.offset and lo <= off < hi
            assert b[i] == (0 if data_byte else a[i]), (n, i)
            zeroed += data_byte
    assert zeroed == len(WRITTEN) + len(READ_BACK)

    # the frame numbers the proxy gave its findings are those of the capture it wrote
    done = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", str(paths["red"]), "--format", "jsonl"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    key = ("session", "frame", "type", "cookie", "offset", "length")
    live = [json.loads(line) for line in plain_jsonl.decode().splitlines()]
    again = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(live) > 5
    assert [tuple(r.get(k) for k in key) for r in live] == [tuple(r.get(k) for k in key) for r in again]


def _empty_sessions() -> list[tap.Record]:
    """What the relay sends for two connections that carried nothing: one the client reset before the
    upstream answered (its bytes never forwarded), one whose upstream refused."""
    def opened(conn: int) -> tap.Record:
        return (tap.OPEN, "c2s", conn, 1000.0, memoryview(json.dumps(
            {"client": ["10.0.0.1", 40000 + conn], "server": ["10.0.0.2", 10809]}).encode()))
    refused = {"action": "upstream-failed", "text": "nbdscope proxy could not connect to the upstream", "values": {}}
    return [opened(0), opened(1),
            (tap.NOTE, "c2s", 0, 1000.1, memoryview(b"5 bytes from the client were not forwarded")),
            (tap.CLOSE, "c2s", 0, 1000.1, memoryview(b"rst")),
            (tap.ACTION, "s2c", 1, 1000.2, memoryview(json.dumps(refused).encode())),
            (tap.CLOSE, "s2c", 1, 1000.2, memoryview(b""))]


def test_sessions_that_carried_nothing_are_recorded_and_reread_alike(tmp_path: Path) -> None:
    from nbdscope.capture import read_captures

    live, pcapng, again = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Engine([JsonlLines(live), RelayedCapture(pcapng)]).run(TapReader(log=lambda line: None).items(_empty_sessions()))
    path = tmp_path / "empty.pcapng"
    path.write_bytes(pcapng.getvalue())
    Engine([JsonlLines(again)]).run(read_captures([str(path)]))
    lines = [json.loads(x) for x in live.getvalue().splitlines()]
    ends = {x["session"]: (x["frame"], x["how"], x["by"]) for x in lines if x["type"] == "CONNECTION_END"}
    # frames 1-6 open both, 7-8 reset the first (it ends on the first RST), 9-10 are the second's two FINs
    assert ends == {"s1": (7, "rst", "c2s"), "s2": (10, "fin", "s2c")}
    assert [(x["session"], x["check"], x["blame"]) for x in lines if x["type"] == "ANOMALY"] == [
        ("s2", "proxy-action.upstream-failed", "proxy")]
    reread = [json.loads(x) for x in again.getvalue().splitlines()]
    assert {x["session"]: (x["frame"], x["how"], x["by"]) for x in reread if x["type"] == "CONNECTION_END"} == ends
    assert b"5 bytes from the client were not forwarded" in pcapng.getvalue()  # a comment on the reset


def test_relay_log_lines_name_sessions_by_the_engines_ids() -> None:
    """The relay numbers connections from 0 in accept order; a log line about one must say the id the
    engine gives its session (the one the console, the JSONL and the findings use), not that number."""
    def opened(conn: int) -> tap.Record:
        return (tap.OPEN, "c2s", conn, 1000.0, memoryview(json.dumps(
            {"client": ["10.0.0.1", 40000 + conn], "server": ["10.0.0.2", 10809]}).encode()))
    said: list[str] = []
    records = [opened(7), opened(3), (tap.SESSION_LOG, "c2s", 3, 1000.1, memoryview(b"upstream refused")),
               (tap.LOG, "c2s", 0, 1000.2, memoryview(b"stopping")),
               (tap.CLOSE, "c2s", 7, 1000.3, memoryview(b"")), (tap.CLOSE, "c2s", 3, 1000.3, memoryview(b""))]
    result = Engine().run(TapReader(log=said.append).items(records))
    engine_id = next(s.id for s in result.sessions if s.client.port == 40003)  # the oracle: the engine itself
    assert said == [f"proxy: {engine_id}: upstream refused", "proxy: stopping"]
    assert engine_id == "s2"
