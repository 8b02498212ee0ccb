"""Rotating capture sets: a real capture split with ``editcap -c N`` (what ``tcpdump -C/-W`` leaves
behind, one file per N packets) must analyse, given file by file in any order or as the directory,
exactly as the whole capture does, with every frame named by the piece that holds it.

Frame k of piece i is frame i*N + k of the whole (editcap numbers pieces from 0), so the test knows
where each finding of the whole must show in the set without asking nbdscope. The captures move
payloads of many segments (nbdcopy's 256 KiB requests in 64 KiB loopback segments, fio's reads), so
small N cut inside payloads and inside handshakes, and connections run across many files."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nbdscope import pipeline
from nbdscope.analysis.engine import Result
from tests.oracles import CAPTURES

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (wireshark-common)")

CASES = [
    ("client-misbehaves-nbdsh.pcap", False),
    ("fio-iodepth8.pcap", False),
    ("nbd-server-nbdinfo-nbdcopy.pcap", False),
    ("nbdcopy-4conn-nbdkit-memory.pcap", False),
    ("seed-unaligned-extent.pcap", False),
    ("stale-read-multi-conn.pcap", True),  # stale-read needs payloads carried across the files
    ("tls-psk.pcap", False),
]
SIZES = (2, 7, 30)


def _analyze(paths: list[str], verify: bool) -> Result:
    return pipeline.run(pipeline.FileSource(paths), verify_data=verify)


def _split(name: str, n: int, where: Path) -> list[str]:
    """The pieces, in order: classic pcap as tcpdump writes them, except for n=2, where editcap's own
    pcapng (the reader's general path, not the flat pcap loop)."""
    where.mkdir()
    subprocess.run(["editcap", "-F", "pcapng" if n == 2 else "pcap", "-c", str(n), str(CAPTURES / name),
                    str(where / "ring.pcap")], check=True, capture_output=True)
    pieces = sorted(str(p) for p in where.iterdir())  # editcap numbers them in order: ring_00000_..., ...
    assert len(pieces) > 1
    return pieces


def _located(pieces: list[str], n: int, frame: int) -> tuple[str, int]:
    """Where frame ``frame`` of the whole lies in the set: the piece and the frame number in it."""
    return pieces[(frame - 1) // n], (frame - 1) % n + 1


def _session_view(s: dict[str, Any]) -> dict[str, Any]:
    keep = dict(s)
    for key in ("input", "last_input", "first_frame", "last_frame"):
        keep.pop(key, None)
    return keep


def _finding(a: dict[str, Any]) -> tuple[Any, ...]:
    # not the message: one citing another frame (stale-read's "wrote there in frame N") cites it as numbered
    # in its own file
    return a["rule"], a.get("check"), a["blame"], a["session"], a["severity"]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("name", "verify"), CASES, ids=[c[0] for c in CASES])
def test_split_capture_is_the_whole_capture(tmp_path: Path, name: str, verify: bool, n: int) -> None:
    whole = _analyze([str(CAPTURES / name)], verify)
    pieces = _split(name, n, tmp_path / "set")
    shuffled = list(pieces)
    random.Random(n).shuffle(shuffled)
    by_files = _analyze(shuffled, verify)
    by_dir = _analyze([str(tmp_path / "set")], verify)
    assert by_files.inputs == pieces and by_dir.inputs == pieces  # read in time order, whatever was given

    want_sessions = [s.as_json() for s in whole.sessions]
    want_findings = [a.as_json() for a in whole.anomalies]
    assert want_sessions, "a capture with no session tests nothing"
    for result in (by_files, by_dir):
        sessions = [s.as_json() for s in result.sessions]
        # same connections, negotiation, per-command tables (counts, bytes, errors, latencies), messages
        assert [_session_view(s) for s in sessions] == [_session_view(s) for s in want_sessions]
        for got, want in zip(sessions, want_sessions, strict=True):
            assert (got["input"], got["first_frame"]) == _located(pieces, n, want["first_frame"])
            assert (got["last_input"], got["last_frame"]) == _located(pieces, n, want["last_frame"])
        findings = [a.as_json(True) for a in result.anomalies]
        assert sorted(map(_finding, findings)) == sorted(map(_finding, want_findings))
        # each finding points at the packet: the piece that holds that frame of the whole, and its number there
        want_at = sorted((_finding(a), _located(pieces, n, a["frame"])) for a in want_findings)
        assert sorted((_finding(a), (a["input"], a["frame"])) for a in findings) == want_at
        assert not result.problems


def test_set_without_its_oldest_file_starts_mid_stream(tmp_path: Path) -> None:
    """tcpdump -W overwrote the first files: the rest still decode, the connections taken up mid-stream."""
    pieces = _split("nbdcopy-4conn-nbdkit-memory.pcap", 30, tmp_path / "set")
    Path(pieces[0]).unlink()
    whole = _analyze([str(CAPTURES / "nbdcopy-4conn-nbdkit-memory.pcap")], False)
    rest = _analyze([str(tmp_path / "set")], False)
    assert rest.inputs == pieces[1:]
    assert 0 < len(rest.sessions) <= len(whole.sessions)
    assert any(not s.saw_start for s in rest.sessions)
    assert all(s.source in pieces[1:] for s in rest.sessions)


def test_directory_takes_only_captures_and_refuses_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nbdscope.cli import main

    pieces = _split("seed-unaligned-extent.pcap", 20, tmp_path / "set")
    (tmp_path / "set" / "README").write_text("not a capture\n")
    (tmp_path / "set" / ".hidden.pcap").write_bytes(Path(pieces[0]).read_bytes())
    assert main(["analyze", "--format", "jsonl", str(tmp_path / "set")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if '"INPUT"' in line] == [f'{{"type":"INPUT","input":"{p}"}}' for p in pieces]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here\n")
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    assert "no pcap or pcapng file in this directory" in capsys.readouterr().err


def _jsonl(paths: list[str]) -> list[dict[str, Any]]:
    import io
    import json

    from nbdscope.report.outputs import JsonlLines

    out = io.BytesIO()
    pipeline.run(pipeline.FileSource(paths), [JsonlLines(out, inputs=paths)])
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("n", (7, 30))
@pytest.mark.parametrize("name", ["nbdcopy-4conn-nbdkit-memory.pcap", "tls-psk.pcap", "client-misbehaves-nbdsh.pcap"])
def test_every_jsonl_line_names_the_file_of_its_frame(tmp_path: Path, name: str, n: int) -> None:
    """In a run over several files every line but the SUMMARY (which lists them) says which file holds its
    frame, and that is the piece holding the same frame of the whole capture; a run over one file names it
    only on its SESSION lines."""
    whole = _jsonl([str(CAPTURES / name)])
    assert all("input" not in r for r in whole if r["type"] != "SESSION")
    assert all(r["input"] == str(CAPTURES / name) for r in whole if r["type"] == "SESSION")
    pieces = _split(name, n, tmp_path / "set")
    split = _jsonl(pieces)
    assert [r for r in split if r["type"] == "INPUT"] == [{"type": "INPUT", "input": p} for p in pieces]
    assert split[-1] == {**whole[-1], "inputs": pieces}  # the same summary, over the pieces
    assert all("input" in r for r in split if r["type"] != "SUMMARY")
    lines = [r for r in split if r["type"] != "INPUT"]
    assert [(r["type"], r.get("session")) for r in lines] == [(r["type"], r.get("session")) for r in whole]
    for got, want in zip(lines, whole, strict=True):
        if "frame" in want:
            assert (got["input"], got["frame"]) == _located(pieces, n, want["frame"]), want
        if "first_frame" in want:
            assert (got["input"], got["first_frame"]) == _located(pieces, n, want["first_frame"]), want
        if "epoch" in want:
            assert got["epoch"] == want["epoch"] and got["time"] == want["time"]
