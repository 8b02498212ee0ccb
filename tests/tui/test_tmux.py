"""The real `nbdscope tui` in a real terminal (tmux), used as a person would."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.tui.tmux import NBDSCOPE, Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def test_newcomer_finds_the_unaligned_extent_and_its_request() -> None:
    t = Tmux([NBDSCOPE, "tui", "captures/seed-unaligned-extent.pcap"], 100, 30)
    try:
        t.wait_for("3 anomalies")
        # the highlighted finding, in full (its pane can be drawn a refresh after the heading)
        screen = t.wait_for("extent of 1000 bytes at offset 0")
        assert "unaligned-extent" in screen and "server" in screen
        t.keys("Enter")
        t.wait_for("NBD_REPLY_TYPE_BLOCK_STATUS   server → client")
        t.wait_for("WARNING unaligned-extent")
        t.keys("r")
        screen = t.wait_for("NBD_CMD_BLOCK_STATUS   client → server")
        t.keys("f")
        time.sleep(0.5)  # focus moves to the filter bar on the next refresh, as a person would wait to see
        t.keys("cmd=read", literal=True)
        t.keys("Enter")
        t.wait_for("of 36 messages · filter: cmd=read")
        t.keys("?")
        t.wait_for("nbdscope — keys")
        t.keys("Escape")
        t.wait_for("nbdscope — keys", shown=False)  # as a person would: once the help has gone (a CI run lost the second of two quick escapes)
        t.keys("Escape")
        t.wait_for("Sessions (enter")
        t.keys("q")
        assert t.wait_gone(), "nbdscope did not quit on q"
    finally:
        t.close()


def test_bad_input_is_one_line_not_a_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    proc = subprocess.run([NBDSCOPE, "tui", str(junk)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not a pcap or pcapng file" in proc.stderr
    proc = subprocess.run([NBDSCOPE, "tui"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "exactly one" in proc.stderr and "Traceback" not in proc.stderr
