"""Inputs that can be read only once, or only through a decompressor: standard input, a FIFO, a
process substitution, and gzip / zstd / lz4 files as Wireshark writes them (issue 15, "Pipes").

The oracle is the same capture read as a plain file: every input form must give the same report,
except for the input's name. The compressed forms are made by the gzip, zstd and lz4 command-line
tools, not by the libraries nbdscope reads them with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.oracles import CAPTURES, ROOT

CAPTURE = CAPTURES / "nbd-server-nbdinfo-nbdcopy.pcap"  # several connections, reads and writes
PCAPNG = CAPTURES / "ipv6.pcapng"


def _analyze(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "nbdscope", "analyze", "--format", "jsonl", *args], input=stdin,
                          capture_output=True, timeout=120, cwd=ROOT)


def _lines(proc: subprocess.CompletedProcess[bytes], name: str) -> list[str]:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().replace(f'"{name}"', '"INPUT"').splitlines()


@pytest.mark.parametrize("capture", [CAPTURE, PCAPNG], ids=lambda p: p.name)
def test_standard_input_reads_like_the_file(capture: Path) -> None:
    whole = _lines(_analyze([str(capture)]), str(capture))
    assert len(whole) > 10
    assert _lines(_analyze(["-"], capture.read_bytes()), "-") == whole


@pytest.mark.parametrize("tool", ["gzip", "zstd", "lz4"])
def test_compressed_inputs_as_files_and_through_a_pipe(tool: str, tmp_path: Path) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")
    packed = subprocess.run([tool, "-q", "-c", str(CAPTURE)], capture_output=True, check=True).stdout
    assert packed[:4] != CAPTURE.read_bytes()[:4]
    whole = _lines(_analyze([str(CAPTURE)]), str(CAPTURE))
    path = tmp_path / f"c.pcap.{tool}"
    path.write_bytes(packed)
    assert _lines(_analyze([str(path)]), str(path)) == whole
    assert _lines(_analyze(["-"], packed), "-") == whole


def test_a_fifo_is_read_once_as_a_stream(tmp_path: Path) -> None:
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    data = CAPTURE.read_bytes()

    def writer() -> None:
        with open(fifo, "wb") as f:  # blocks until the reader opens it
            for i in range(0, len(data), 65536):
                f.write(data[i:i + 65536])

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = _lines(_analyze([str(fifo)]), str(fifo))
    t.join(10)
    assert got == _lines(_analyze([str(CAPTURE)]), str(CAPTURE))


def test_bad_stream_input_is_one_line_and_stdin_only_once() -> None:
    proc = _analyze(["-"], b"not a capture at all")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "nbdscope: error: -: not a pcap or pcapng file (starts with 6e6f7420)"
    proc = _analyze(["-", "-"], b"")
    assert proc.returncode == 2 and b"only once" in proc.stderr and b"Traceback" not in proc.stderr
    corrupt = subprocess.run(["gzip", "-c"], input=CAPTURE.read_bytes()[:5000], capture_output=True).stdout[:-30]
    proc = _analyze(["-"], corrupt)
    err = proc.stderr.decode()
    assert b"Traceback" not in proc.stderr and err.count("\n") <= 2, err
