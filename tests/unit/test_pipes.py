"""A reader that stops early (`nbdscope ... | head -1`) ends nbdscope quietly: exit 0,
nothing on stderr, for every output format, including the final flush at exit."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from tests.oracles import CAPTURES, ROOT

BIG = str(CAPTURES / "fio-iodepth8.pcap")
MANY_SESSIONS = str(CAPTURES / "nbdcopy-4conn-nbdkit-memory.pcap")  # the largest JSON report
PIPE_SIZE = 4096  # the smallest pipe Linux makes: the writer blocks early and is still writing when we close

COMMANDS = {
    "analyze text": ["analyze", BIG, MANY_SESSIONS],  # (the text report is compact: two inputs outgrow a pipe)
    "analyze --messages": ["analyze", "--messages", BIG],
    "analyze json": ["analyze", "--format", "json", BIG, MANY_SESSIONS],
    "analyze jsonl": ["analyze", "--format", "jsonl", BIG],
    "analyze jsonl --verify-data": ["analyze", "--format", "jsonl", "--verify-data", BIG],
    "rules": ["rules"],
    "rules json": ["rules", "--format", "json"],
}


def first_line_then_close(args: list[str]) -> tuple[bytes, subprocess.CompletedProcess[bytes]]:
    """Run nbdscope with stdout into a small pipe, read one line byte by byte, close the pipe."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    proc = subprocess.Popen([sys.executable, "-m", "nbdscope", *args], stdout=w, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(w)
    line = b""
    try:
        while not line.endswith(b"\n"):
            byte = os.read(r, 1)
            if not byte:
                break
            line += byte
    finally:
        os.close(r)
    _, err = proc.communicate(timeout=120)
    return line, subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)


def full_output_size(args: list[str]) -> int:
    return len(subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, cwd=ROOT,
                              timeout=120, check=True).stdout)


@pytest.mark.parametrize("name", COMMANDS)
def test_closed_pipe_ends_quietly(name: str) -> None:
    args = COMMANDS[name]
    line, proc = first_line_then_close(args)
    assert line.endswith(b"\n")  # it did write before the reader left
    assert proc.stderr == b"" and proc.returncode == 0, (proc.returncode, proc.stderr.decode())


def test_outputs_outgrow_the_pipe() -> None:
    """Before the close the writer can have put at most the pipe's size plus the line we read into it;
    with less output than that the tests above could pass without nbdscope ever meeting the closed pipe."""
    for args in COMMANDS.values():
        assert full_output_size(args) > PIPE_SIZE + 1024, args
