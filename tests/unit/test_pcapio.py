"""Capture I/O (capture/pcapio): every reader path gives a pcapng's timestamps with
if_tsresol and if_tsoffset of each interface applied, an annotated copy keeps them to
the tick, and redaction of a copy zeroes exactly the data bytes, wherever TCP put
them (out of order, retransmitted, overlapping)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from nbdscope import vocab as it
from nbdscope.capture import read_captures
from nbdscope.capture.pcapio import Packet, frames, records
from nbdscope.capture.pcapio.redact import DataMask
from tests import nbdwire as w
from tests import pcapbuild as pb
from tests.oracles import ROOT

WRITE = 1
# interface 0: Ethernet in nanoseconds from 2020-09-13; interface 1: Linux cooked in milliseconds from 2023-11-14
OFFSETS, RESOLUTIONS, LINKTYPES = [1_600_000_000, 1_700_000_000], [9, 3], [1, 113]


def nbdscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, text=True, cwd=ROOT)


def session(flow: pb.Flow) -> list[bytes]:
    """An oldstyle handshake, one write of 3000 bytes, its reply and the close."""
    return [*flow.syn(), flow.s2c(w.greeting_oldstyle(1 << 20, 1)),
            flow.c2s(w.request(WRITE, 7, 0, 3000, data=bytes(range(250)) * 12)), flow.s2c(w.simple_reply(7)),
            *flow.fin()]


def offset_capture(path: Path) -> list[Decimal]:
    """A pcapng of two interfaces with their own resolutions and offsets; returns each frame's exact time."""
    times = []
    packets = []
    for i, ip in enumerate(session(pb.Flow())):
        iface = i % 2
        ticks = 1000 + 37 * i  # ticks past the interface's offset
        times.append(OFFSETS[iface] + Decimal(ticks).scaleb(-RESOLUTIONS[iface]))
        packets.append((times[-1], iface, pb.frame(LINKTYPES[iface], ip)))
    pb.write_pcapng(str(path), packets, LINKTYPES, tsresol=RESOLUTIONS, tsoffset=OFFSETS)
    return times


def test_every_reader_path_applies_if_tsoffset_and_if_tsresol_per_interface(tmp_path: Path) -> None:
    path = tmp_path / "offset.pcapng"
    want = [float(t) for t in offset_capture(path)]
    assert [t for _n, t, _l, _d in frames(str(path), [])] == pytest.approx(want, abs=1e-6)
    got = [r for r in records(str(path), []) if isinstance(r, Packet)]
    assert [r.time for r in got] == pytest.approx(want, abs=1e-6)
    assert [r.ticks for r in got] == [1000 + 37 * i for i in range(len(want))]  # as stored, for exact copies
    data = [i for i in read_captures([str(path)]) if isinstance(i, it.StreamData | it.StreamOpen | it.StreamClose)]
    assert data and all(i.time == pytest.approx(want[i.frame - 1], abs=1e-6) for i in data)
    out = tmp_path / "annotated.pcapng"
    done = nbdscope("analyze", str(path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert [t for _n, t, _l, _d in frames(str(out), [])] == pytest.approx(want, abs=1e-6)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")
def test_tshark_reads_the_same_exact_times_from_the_capture_and_its_annotated_copy(tmp_path: Path) -> None:
    path, out = tmp_path / "offset.pcapng", tmp_path / "annotated.pcapng"
    want = offset_capture(path)
    assert nbdscope("analyze", str(path), "-o", str(out), "--redact").returncode == 0

    def epochs(capture: Path) -> list[Decimal]:
        done = subprocess.run(["tshark", "-r", str(capture), "-T", "fields", "-e", "frame.time_epoch"],
                              capture_output=True, text=True, check=True)
        return [Decimal(line) for line in done.stdout.split()]

    assert epochs(path) == epochs(out) == want


def write_session(flow: pb.Flow) -> tuple[list[bytes], int, int]:
    """A write whose 3000 data bytes travel out of order, retransmitted and overlapping;
    returns the packets and the client's sequence numbers of the first and last data byte + 1."""
    pkts = [*flow.syn(), flow.s2c(w.greeting_oldstyle(1 << 20, 1))]
    data = bytes(range(1, 251)) * 12
    msg = w.request(WRITE, 7, 0, len(data), data=data)
    base = flow.cseq
    first, end = base + 28, base + len(msg)
    pkts += [flow.c2s(msg[:1028], seq=base, advance=False),
             flow.c2s(msg[2028:], seq=base + 2028, advance=False),  # arrives before the middle
             flow.c2s(msg[1028:2028], seq=base + 1028, advance=False),
             flow.c2s(msg[1028:2028], seq=base + 1028, advance=False),  # retransmitted
             flow.c2s(msg[1500:2500], seq=base + 1500, advance=False),  # overlapping what came before
             flow.c2s(msg[:1028], seq=base, advance=False)]  # the header again, with the first data
    flow.cseq += len(msg)
    pkts += [flow.s2c(w.simple_reply(7)), *flow.fin()]
    return pkts, first, end


def test_redaction_of_a_copy_zeroes_each_data_byte_wherever_tcp_put_it(tmp_path: Path) -> None:
    from nbdscope.capture.linklayer import tcp_segment

    pkts, first, end = write_session(pb.Flow())
    path, out = tmp_path / "w.pcap", tmp_path / "red.pcapng"
    pb.write_pcap(str(path), [(1000.0 + i / 100, pb.frame(1, p)) for i, p in enumerate(pkts)])
    assert nbdscope("analyze", str(path), "-o", str(out), "--redact").returncode == 0
    before, after = list(frames(str(path), [])), list(frames(str(out), []))
    assert len(before) == len(after)
    hidden = 0
    for (_n, _t, _l, a), (_m, _u, _k, b) in zip(before, after, strict=True):
        a, b = bytes(a), bytes(b)
        seg = tcp_segment(1, a)
        assert seg is not None and len(a) == len(b)
        for i in range(len(a)):
            data_byte = seg.dport == 10809 and i >= seg.offset and first <= seg.seq + i - seg.offset < end
            assert b[i] == (0 if data_byte else a[i]), (_n, i)
            hidden += data_byte
    assert hidden == 6 * 1000  # every copy of every data byte: six segments carry 1000 each


def test_data_mask_merges_ranges_in_any_order_and_zeroes_only_them() -> None:
    mask = DataMask()
    key = (0, "c2s")
    mask.add(key, [(10, 20), (30, 40), (20, 25)])  # touching ranges merge
    mask.add(key, [(0, 2), (24, 31), (50, 50)])  # one out of order that bridges two; an empty one
    assert (mask.starts[key], mask.ends[key]) == ([0, 10], [2, 40])
    buf = bytearray(b"x" * 16)
    mask.zero(buf, 4, key, 1, 12)  # stream bytes 1..12 sit at 4..15 of buf
    assert buf == b"xxxx" + b"\0" + b"x" * 8 + b"\0" * 3
    assert list(mask.pieces(key, -1, 5)) == [(0, 5)]  # bytes without a place are hidden whole
    mask.forget_before(key, 3)
    assert mask.starts[key] == [10]
