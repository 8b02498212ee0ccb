"""`nbdscope proxy --tui` in a real terminal, in front of a real nbdkit on loopback:
what a client does through it appears on screen as it happens, and agrees with
what nbdkit's log filter says it was asked."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.live import SYSTEM_PYTHON, free_port, nbdsh, process, run
from tests.oracles import nbdkit_log
from tests.tui.tmux import NBDSCOPE, Tmux

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdinfo", "tmux"))
                                 or not os.path.exists(SYSTEM_PYTHON), reason="needs nbdkit, libnbd and tmux")]

SCRIPT = """
h.pwrite(b'x' * 4096, 8192)
h.pread(4096, 8192)
h.flush()
h.shutdown()
"""


def test_proxy_tui_shows_live_traffic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server_port, proxy_port = free_port(), free_port()
    log = tmp_path / "nbdkit.log"
    timeline = tmp_path / "timeline.jsonl"
    server = ["nbdkit", "-f", "-p", str(server_port), "-i", "127.0.0.1", "--filter=log", "memory", "1M",
              f"logfile={log}"]
    with process(server, port=server_port):
        t = Tmux([NBDSCOPE, "proxy", "--listen", f"127.0.0.1:{proxy_port}", "--upstream",
                  f"127.0.0.1:{server_port}", "--tui", "--jsonl", str(timeline)], 100, 30)
        try:
            t.wait_for("0 sessions · 0 messages · 0 anomalies · LIVE proxy")
            run(nbdsh(f"nbd://127.0.0.1:{proxy_port}", SCRIPT), timeout=30)
            t.wait_for("1 session · ")
            t.keys("m")
            t.wait_for("OPT_GO")
            t.keys("End")
            screen = t.wait_for("CMD_FLUSH")
            assert "CMD_READ" in screen and "LIVE proxy" in screen
            # a second client while the UI is open: the view grows without any key
            run(["nbdinfo", f"nbd://127.0.0.1:{proxy_port}"], timeout=30)
            t.keys("F")  # follow the newest message
            t.wait_for("CONNECTION_END", timeout=15)
            t.keys("escape")
            t.wait_for("2 sessions · ")
            t.keys("q")
            assert t.wait_gone(15), "the proxy UI did not quit on q"
        finally:
            t.close()
    requests, _ = nbdkit_log(log)
    logged = [(r.command, r.offset, r.length) for conn in sorted(requests) for r in requests[conn]]
    assert ("NBD_CMD_WRITE", 8192, 4096) in logged and ("NBD_CMD_READ", 8192, 4096) in logged
    records = [json.loads(line) for line in timeline.read_text().splitlines()]
    seen = [(r["type"], r["offset"], r["length"]) for r in records
            if r.get("type") in ("NBD_CMD_WRITE", "NBD_CMD_READ", "NBD_CMD_FLUSH")]
    assert [x for x in seen if x[0] != "NBD_CMD_FLUSH"] == [x for x in logged if x[0] != "NBD_CMD_FLUSH"]
    assert len({r["session"] for r in records if "session" in r}) == 2
