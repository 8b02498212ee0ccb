"""`nbdscope analyze IN -o OUT.pcapng`: the capture back with every finding as a
packet comment, read back by Debian's tshark (no plugin needed), and --redact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbdscope.capture.pcapio import frames
from tests.oracles import CAPTURES, ROOT

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="needs tshark (Debian package tshark)")
PCAPS = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


def nbdscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, text=True, cwd=ROOT)


def fields(capture: Path, *names: str, display_filter: str = "") -> list[list[str]]:
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(capture), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=\x1f"]
    if display_filter:
        cmd += ["-Y", display_filter]
    for n in names:
        cmd += ["-e", n]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in done.stdout.splitlines()]


@needs_tshark
@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: p.name)
def test_every_anomaly_is_a_comment_on_its_frame_and_packets_are_untouched(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.pcapng"
    done = nbdscope("analyze", str(capture), "--format", "json", "-o", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the report still goes to stdout
    wanted = sorted((a["frame"], f"nbdscope {a['rule']} [{a['severity']}, blame {a['blame']}, session "
                     f"{a['session']}]: {a['message']}") for a in report["anomalies"])
    got = sorted((int(f), c) for f, cs in fields(out, "frame.number", "frame.comment",
                                                 display_filter="frame.comment contains \"nbdscope \"")
                 for c in cs.split("\x1f") if c.startswith("nbdscope "))
    assert got == wanted
    # same packets, same bytes, same timestamps to the nanosecond: frame numbers mean the same thing
    cols = ("frame.number", "frame.time_epoch", "frame.len", "frame.cap_len", "tcp.stream", "tcp.seq_raw")
    assert fields(out, *cols) == fields(capture, *cols)
    assert [(n, bytes(d)) for n, _t, _l, d in frames(str(out), [])] == \
        [(n, bytes(d)) for n, _t, _l, d in frames(str(capture), [])]


@needs_tshark
def test_seed_finding_shows_in_plain_tshark_as_pkt_comment(tmp_path: Path) -> None:
    out = tmp_path / "seed.pcapng"
    assert nbdscope("analyze", str(CAPTURES / "seed-cache-flag.pcap"), "-o", str(out)).returncode == 0
    rows = fields(out, "frame.number", "frame.comment", display_filter="frame.comment contains \"cache-flag-mismatch\"")
    assert [r[0] for r in rows] == ["17"]
    assert "blame client" in rows[0][1] and "[warning" in rows[0][1]


def _payload_diff(original: Path, redacted: Path) -> tuple[int, int]:
    """(bytes zeroed, bytes changed to anything but zero) over the whole capture."""
    zeroed = other = 0
    for (_n, _t, _l, a), (_m, _u, _k, b) in zip(frames(str(original), []), frames(str(redacted), []), strict=True):
        a, b = bytes(a), bytes(b)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            if x != y:
                zeroed += y == 0
                other += y != 0
    return zeroed, other


@pytest.mark.parametrize("name", ["stale-read-multi-conn.pcap", "ipv6.pcapng", "nbdcopy-4conn-nbdkit-memory.pcap",
                                  "oldstyle-nbdkit.pcap"])
def test_redact_zeroes_data_and_keeps_every_header(name: str, tmp_path: Path) -> None:
    capture = CAPTURES / name
    out = tmp_path / "redacted.pcapng"
    assert nbdscope("analyze", str(capture), "-o", str(out), "--redact").returncode == 0
    zeroed, other = _payload_diff(capture, out)
    assert other == 0 and zeroed > 0
    if name.startswith("stale-read"):  # nbdsh wrote 4 KiB of 'N'
        assert b"N" * 1024 in capture.read_bytes() and b"N" * 1024 not in out.read_bytes()
    # every header survived: the redacted capture decodes to the same timeline and findings
    assert _timeline(out) == _timeline(capture)


def _decoder_ranges(capture: Path) -> tuple[dict[tuple[int, int], tuple[int, str]], dict[tuple[int, str], list]]:
    """The decoder's read/write data ranges per connection and direction, and the connection
    of each (source port, destination port)."""
    from nbdscope import vocab as it
    from nbdscope.analysis.addons import Addon
    from nbdscope.analysis.engine import Engine
    from nbdscope.capture import read_captures

    class WantsRanges(Addon):
        NEEDS = frozenset({"payload-ranges"})

    engine = Engine([WantsRanges()])
    conns: dict[tuple[int, int], tuple[int, str]] = {}
    ranges: dict[tuple[int, str], list] = {}
    for item in read_captures([str(capture)]):
        engine.feed(item)
        if isinstance(item, it.StreamOpen):
            conns[(item.client.port, item.server.port)] = (item.conn, "c2s")
            conns[(item.server.port, item.client.port)] = (item.conn, "s2c")
        elif isinstance(item, it.StreamData | it.StreamGap):
            decoder = engine.connection(item.conn)
            if decoder is not None:
                ranges.setdefault((item.conn, item.dir), []).extend(decoder.take_payload_ranges(item.dir))
    engine.finish()
    return conns, ranges


@needs_tshark
@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: p.name)
def test_redacted_copy_zeroes_exactly_the_decoders_data_ranges(capture: Path, tmp_path: Path) -> None:
    """Stream offsets from tshark's sequence numbers, not from nbdscope's reassembly: every
    payload byte (retransmissions too) at a stream offset the decoder calls data is zero in
    the copy, every other byte of every frame is as it was."""
    out = tmp_path / "redacted.pcapng"
    assert nbdscope("analyze", str(capture), "-o", str(out), "--redact").returncode == 0
    conns, ranges = _decoder_ranges(capture)
    rows = fields(capture, "frame.number", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.flags.syn", "tcp.len",
                  "frame.cap_len", "tcp.payload")
    base: dict[tuple[int, int], int] = {}
    wanted: dict[int, tuple[int, bytes, set[int]]] = {}  # frame: payload position, payload, positions to zero
    for number, sport, dport, seq, syn, length, caplen, payload in rows:
        if not sport or (int(sport), int(dport)) not in conns:
            continue
        key = (int(sport), int(dport))
        if syn in ("1", "True"):
            base[key] = int(seq) + 1
            continue
        if not int(length):
            continue
        start = (int(seq) - base.setdefault(key, int(seq))) & 0xFFFFFFFF
        end = start + int(length)
        at = int(caplen) - int(length)
        zero = {at + o - start for lo, hi in ranges.get(conns[key], []) for o in range(max(lo, start), min(hi, end))}
        wanted[int(number)] = (at, bytes.fromhex(payload.replace(":", "")), zero)
    zeroed = 0
    for (n, _t, _l, a), (_m, _u, _k, b) in zip(frames(str(capture), []), frames(str(out), []), strict=True):
        a, b = bytes(a), bytes(b)
        at, payload, zero = wanted.get(n, (0, b"", set()))
        assert a[at:at + len(payload)] == payload  # the payload sits where we think (no link-layer trailer)
        assert len(a) == len(b)
        assert [i for i in range(len(a)) if b[i] != (0 if i in zero else a[i])] == [], f"frame {n}"
        zeroed += len(zero)
    assert zeroed >= sum(hi - lo for spans in ranges.values() for lo, hi in spans)  # retransmitted bytes count twice
    cols = ("frame.time_epoch", "frame.len", "frame.cap_len", "tcp.stream", "tcp.seq_raw", "tcp.len")
    assert fields(out, *cols) == fields(capture, *cols)  # timestamps to the nanosecond, every header


def _timeline(capture: Path) -> list[dict]:
    """analyze's JSONL without times: the reader turns pcap and pcapng timestamps (equal to the
    nanosecond, checked above with tshark) into floats by different sums, a rounding apart; and without
    the file names (SESSION's input, SUMMARY's inputs), which differ."""
    lines = nbdscope("analyze", str(capture), "--format", "jsonl").stdout.splitlines()
    drop = ("time", "epoch", "latency_us", "input", "inputs", "t0", "last")
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def test_annotated_capture_needs_exactly_one_input_and_redact_needs_it(tmp_path: Path) -> None:
    two = nbdscope("analyze", str(PCAPS[0]), str(PCAPS[1]), "-o", str(tmp_path / "x.pcapng"))
    assert two.returncode == 2 and two.stderr.count("\n") == 1 and "exactly one input" in two.stderr
    assert not (tmp_path / "x.pcapng").exists()
    red = nbdscope("analyze", str(PCAPS[0]), "--redact")
    assert red.returncode == 2 and "-o FILE.pcapng" in red.stderr and "Traceback" not in red.stderr
    copy = tmp_path / "in.pcapng"
    copy.write_bytes((CAPTURES / "ipv6.pcapng").read_bytes())
    same = nbdscope("analyze", str(copy), "-o", str(copy))
    assert same.returncode == 2 and "overwrite" in same.stderr
    unwritable = nbdscope("analyze", str(PCAPS[0]), "-o", str(tmp_path / "missing" / "x.pcapng"))
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr
    # other names keep writing the report there
    report = tmp_path / "r.json"
    assert nbdscope("analyze", str(PCAPS[0]), "--format", "json", "-o", str(report)).returncode == 0
    assert json.loads(report.read_text())["inputs"] == [str(PCAPS[0])]


@needs_tshark
def test_comments_already_in_a_pcapng_are_kept_and_gzip_input_works(tmp_path: Path) -> None:
    import gzip

    packed = tmp_path / "seed.pcap.gz"
    packed.write_bytes(gzip.compress((CAPTURES / "seed-cache-flag.pcap").read_bytes()))
    once, twice = tmp_path / "once.pcapng", tmp_path / "twice.pcapng"
    assert nbdscope("analyze", str(packed), "-o", str(once)).returncode == 0
    assert nbdscope("analyze", str(once), "-o", str(twice)).returncode == 0
    rows = fields(twice, "frame.number", "frame.comment", display_filter="frame.comment")
    assert [r[0] for r in rows] == ["17"]
    assert len(rows[0][1].split("\x1f")) == 2  # the first run's comment, then the second's
