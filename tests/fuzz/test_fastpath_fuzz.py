"""The compiled per-message path against the pure-Python path on generated captures: NBD sessions of
READ and WRITE traffic with every kind of departure from the quiet case (flags, errors, empty or
oversized or unaligned requests, reused and invented cookies, other commands, multi-chunk replies,
NBD_CMD_DISC, NBD_ESHUTDOWN), cut into TCP segments anywhere (headers split across segments, many
messages in one), with retransmissions, reordering, losses and pure ACKs, in three link layers, and
then with bytes of the file overwritten at random. Both paths must print the same reports (json, jsonl,
text), and the compiled path must never raise or crash on what it is given."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import nbdwire as w
from tests.bothways import both, built, open_state, taken
from tests.pcapbuild import Flow, frame, write_pcap
from tests.wirescripts import handshake

pytestmark = pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built")

READ, WRITE, DISC, FLUSH = 0, 1, 2, 3
OFFSET_DATA, NONE, DONE = 1, 0, 1
SIZE = 1 << 20
# how a request or its reply departs from the quiet case (each capture has its own share of quiet ones)
QUIRKS = ["flags", "error", "eshutdown", "zero", "beyond", "unaligned", "reuse", "unknown",
                           "flush", "multichunk", "wrongoffset", "simple-read", "huge", "double"]


def _messages(rng: random.Random, structured: bool, n: int) -> list[tuple[str, bytes]]:
    """A transmission phase of about n requests, up to 8 in flight, replies in any order."""
    out: list[tuple[str, bytes]] = []
    flying: list[tuple[int, int, int, int, str]] = []  # cookie, command, offset, length, quirk
    cookie = 1
    quiet = rng.choice((0.5, 0.97, 0.995))
    for _ in range(n):
        quirk = "quiet" if rng.random() < quiet else rng.choice(QUIRKS)
        cmd = FLUSH if quirk == "flush" else rng.choice((READ, READ, WRITE))
        offset, length = rng.randrange(0, SIZE // 4096) * 4096, rng.choice((512, 4096, 8192))
        flags = 0
        if quirk == "flags":
            flags = rng.choice((1, 4, 1 << 9))
        elif quirk == "zero":
            length = 0
        elif quirk == "beyond":
            offset = SIZE - 512
        elif quirk == "unaligned":
            offset += 1
        elif quirk == "huge":
            length = 40 << 20
        if cmd == FLUSH:
            offset = length = 0
        c = cookie if quirk != "reuse" or not flying else flying[0][0]
        cookie += 1
        data = bytes(length) if cmd == WRITE and length < (1 << 20) else b""
        out.append(("c2s", w.request(cmd, c, offset, length if cmd != WRITE or data else 0, flags, data)))
        flying.append((c, cmd, offset, length, quirk))
        while flying and (len(flying) >= 8 or rng.random() < 0.4):
            out += _reply(rng, structured, flying.pop(rng.randrange(len(flying))))
    while flying:
        out += _reply(rng, structured, flying.pop(rng.randrange(len(flying))))
    if rng.random() < 0.3:
        out.append(("c2s", w.request(DISC, cookie, 0, 0)))
    return out


def _reply(rng: random.Random, structured: bool, flight: tuple[int, int, int, int, str]) -> list[tuple[str, bytes]]:
    c, cmd, offset, length, quirk = flight
    if quirk == "unknown":
        c += 1000
    error = {"error": 5, "eshutdown": 108}.get(quirk, 0)
    if cmd != READ or error:
        if structured and error and cmd == READ:
            return [("s2c", w.chunk(c, 0x8001, w.error_payload(error, "no"), DONE))]
        return [("s2c", w.simple_reply(c, error))]
    if quirk == "double":  # a second reply for a request already answered (unmatched-reply reads recent cookies)
        return [("s2c", w.simple_reply(c, 0, bytes(length) if cmd == READ and not structured else b""))] * 2
    data = bytes(min(length, 1 << 16))
    if structured and quirk != "simple-read":
        if quirk == "multichunk":
            return [("s2c", w.chunk(c, OFFSET_DATA, offset.to_bytes(8, "big") + data)),
                    ("s2c", w.chunk(c, NONE, b"", DONE))]
        at = offset + (512 if quirk == "wrongoffset" else 0)
        return [("s2c", w.chunk(c, OFFSET_DATA, at.to_bytes(8, "big") + data, DONE))]
    return [("s2c", w.simple_reply(c, 0, data))]


def _segments(rng: random.Random, script: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Cut the conversation into segments: runs of one direction joined, then split anywhere."""
    runs: list[tuple[str, bytearray]] = []
    for direction, data in script:
        if runs and runs[-1][0] == direction and rng.random() < 0.7:
            runs[-1][1].extend(data)
        else:
            runs.append((direction, bytearray(data)))
    out = []
    for direction, data in runs:
        i = 0
        while i < len(data):
            n = rng.choice((1, 3, 7, 16, 27, 29, 100, 1000, 1460, 9000, 65000))
            out.append((direction, bytes(data[i:i + n])))
            i += n
    return out


def build(seed: int, path: Path, script: list[tuple[str, bytes]] | None = None, structured: bool = False) -> None:
    """A capture of one session made from the seed (or of ``script`` after a handshake, with the seed's cuts)."""
    rng = random.Random(seed)
    if script is None:
        structured = rng.random() < 0.5
    tflags = rng.choice((0x14D, 0x14F, 0x145, 0x14D | 0x400))  # with or without READ_ONLY and FUA
    block = rng.choice((None, (512, 4096, 1 << 25), (4096, 4096, 65536)))
    hello = handshake(tflags, size=SIZE, block=block, structured=structured)
    linktype = rng.choice((1, 113, 276))
    noise = rng.choice((0.0, 0.01, 0.05)) if script is None else 0.0  # segments retransmitted, reordered, lost
    flow = Flow()
    packets = flow.syn()
    body = _messages(rng, structured, rng.randrange(5, 300)) if script is None else script
    for n, (direction, data) in enumerate(hello + _segments(rng, body)):
        pkt = flow.c2s(data) if direction == "c2s" else flow.s2c(data)
        roll = rng.random() / noise if noise and n >= len(hello) else 1.0
        if roll < 0.5:
            packets += [pkt, pkt]  # a retransmission
        elif roll < 0.8 and len(packets) > 4:
            packets.insert(len(packets) - 1, pkt)  # out of order
        elif roll < 1.0:
            pass  # lost
        else:
            packets.append(pkt)
        if rng.random() < 0.1:
            packets.append(flow.ack_from_client(flow.sseq))
    if rng.random() < 0.7:
        packets += flow.fin()
    write_pcap(str(path), [(1.0 + i * 1e-5 * rng.choice((1, 3, 50)), frame(linktype, p))
                           for i, p in enumerate(packets)], linktype=linktype)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1 << 30))
def test_generated_sessions_both_ways(seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.pcap"
        build(seed, path)
        for mode in (["--format", "json"], ["--format", "jsonl"], ["--format", "text"], ["--verify-data"]):
            pure, native = both([*mode, str(path)])
            assert native == pure
        assert open_state([str(path)], pure=False) == open_state([str(path)], pure=True)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1 << 30), st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=16))
def test_damaged_captures_both_ways(seed: int, flips: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.pcap"
        build(seed, path)
        blob = bytearray(path.read_bytes())
        for pos, value in flips:
            blob[24 + pos % (len(blob) - 24)] = value  # past the file header: still a capture
        path.write_bytes(bytes(blob))
        pure, native = both(["--format", "json", str(path)])
        assert native == pure


def test_the_generator_reaches_the_compiled_path() -> None:
    """The comparisons above mean something only if the compiled path takes messages of these captures."""
    with tempfile.TemporaryDirectory() as tmp:
        total = 0
        for seed in range(20):
            path = Path(tmp) / f"{seed}.pcap"
            build(seed, path)
            total += taken([str(path)])
        assert total > 200



def _quiet_reads(n: int, structured: bool, first: int = 1) -> list[tuple[str, bytes]]:
    out = []
    for cookie in range(first, first + n):
        out.append(("c2s", w.request(READ, cookie, cookie * 4096 % SIZE, 4096)))
        out += _reply(random.Random(0), structured, (cookie, READ, cookie * 4096 % SIZE, 4096, "quiet"))
    return out


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("after", [
    [("s2c", w.simple_reply(90, 0, b""))],  # a second reply: unmatched-reply.second-reply, from the recent cookies
    [("c2s", w.request(READ, 500, 0, 4096)), ("c2s", w.request(READ, 500, 4096, 4096))],  # reuse while in flight
    [("c2s", w.request(DISC, 7, 0, 0))],  # NBD_CMD_DISC with the last requests still in flight
    [("c2s", w.request(READ, 501, 0, 4096, 1))],  # FUA on a read, then the end of the capture
], ids=["second-reply", "reuse", "disc", "flag"])
def test_state_handed_back(structured: bool, after: list[tuple[str, bytes]]) -> None:
    """After many quiet messages, one that is not: what the compiled path kept (recent cookies, requests in
    flight, counters) is where the pure-Python path has it."""
    script = _quiet_reads(100, structured) + [("c2s", w.request(READ, 700 + i, 0, 4096)) for i in range(3)] + after
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(4):
            path = Path(tmp) / f"{seed}.pcap"
            build(seed, path, script, structured)
            assert taken([str(path)]) > 50
            for mode in ("json", "jsonl"):
                pure, native = both(["--format", mode, str(path)])
                assert native == pure
            assert open_state([str(path)], pure=False) == open_state([str(path)], pure=True)
