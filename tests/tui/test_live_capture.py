"""`nbdscope live`: tcpdump on loopback feeding the decoder through a pipe while a real
client talks to nbdkit; every request nbdkit logged comes out decoded, live; and `-w` saves
the packets so that analyzing the file later gives the same lines (and tshark reads it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.live import SYSTEM_PYTHON, free_port, nbdsh, process, run
from tests.oracles import nbdkit_log
from tests.tui.tmux import NBDSCOPE

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump")) or os.geteuid() != 0
                                 or not os.path.exists(SYSTEM_PYTHON), reason="needs nbdkit, tcpdump, libnbd, root")]

SCRIPT = """
for i in range(8):
    h.pwrite(bytes([i]) * 65536, i * 65536)
h.pread(65536, 3 * 65536)
h.zero(4096, 1 << 20)
h.flush()
h.shutdown()
"""


def test_live_capture_decodes_what_nbdkit_saw(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    log, out, err = tmp_path / "nbdkit.log", tmp_path / "live.jsonl", tmp_path / "live.err"
    saved = tmp_path / "saved.pcapng"
    with open(err, "w") as errf:
        live = subprocess.Popen([NBDSCOPE, "live", "-i", "lo", "--filter", f"tcp port {port}", "--format", "jsonl",
                                 "-o", str(out), "-w", str(saved)], stderr=errf)
    try:
        deadline = time.monotonic() + 15
        while "capturing on lo" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=log", "memory", "4M",
                  f"logfile={log}"]
        with process(server, port=port):
            run(nbdsh(f"nbd://127.0.0.1:{port}", SCRIPT), timeout=30)
            time.sleep(0.5)
        live.send_signal(signal.SIGINT)
        assert live.wait(20) == 0
    finally:
        if live.poll() is None:
            live.kill()
            live.wait(5)
    requests, _ = nbdkit_log(log)
    logged = [(r.command, r.offset, r.length) for conn in sorted(requests) for r in requests[conn]]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    decoded = [(r["type"], r["offset"], r["length"]) for r in records
               if r["type"] in {c for c, _, _ in logged}]
    assert len(logged) == 11 and decoded == logged
    again = subprocess.run([NBDSCOPE, "analyze", "--format", "jsonl", str(saved)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    # the same lines, but for the name of the input: "live" there, the saved file here
    def unnamed(text: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in line.items() if k not in ("input", "inputs")} for line in lines(text)]
    assert unnamed(again.stdout) == unnamed(out.read_text())
    if shutil.which("tshark"):
        frames = subprocess.run(["tshark", "-r", str(saved), "-T", "fields", "-e", "frame.number"],
                                capture_output=True, text=True, timeout=60)
        assert frames.returncode == 0 and len(frames.stdout.split()) >= max(r.get("frame", 0) for r in records)
    summary = err.read_text().strip().splitlines()[-1]
    assert "1 session, 0 anomalies" in summary and "packets dropped by the kernel" in summary


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_live_tui_shows_a_session_as_it_happens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.tui.tmux import Tmux

    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    port = free_port()
    t = Tmux([NBDSCOPE, "live", "-i", "lo", "--filter", f"tcp port {port}", "--tui"], 100, 30)
    try:
        t.wait_for("0 sessions · 0 messages · 0 anomalies · LIVE capture on lo")
        with process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "memory", "1M"], port=port):
            run(["nbdinfo", "--map", f"nbd://127.0.0.1:{port}"], timeout=30)
            screen = t.wait_for("1 session · ")
        assert f"127.0.0.1:{port}" in screen and "fixed-newstyle" in screen
        t.keys("m")
        t.wait_for("NBD_")  # the detail pane of the first message
        t.keys("End")
        t.wait_for("CONNECTION_END")
        t.keys("q")
        assert t.wait_gone(15), "nbdscope live --tui did not quit on q"
    finally:
        t.close()
