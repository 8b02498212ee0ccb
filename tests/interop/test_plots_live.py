"""`nbdscope live -i lo -o report.html`: the HTML report is written when the capture stops (SIGINT), with
the requests a real client made (the oracle: nbdkit's log filter) in its plot data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from nbdscope.capture.processes import stop_process
from tests.htmlpages import plot_data
from tests.live import ENV, free_port, nbdsh, process, run
from tests.oracles import ROOT, nbdkit_log

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump")) or os.geteuid() != 0,
                                 reason="needs nbdkit, tcpdump and root")]

SCRIPT = """
for i in range(6):
    h.pwrite(b'x' * 8192, i * 65536)
h.pread(4096, 4096)
h.zero(65536, 1 << 20)
h.flush()
h.shutdown()
"""


def test_live_writes_the_html_report_when_stopped(tmp_path: Path) -> None:
    port = free_port()
    log, page = tmp_path / "nbdkit.log", tmp_path / "live.html"
    live = subprocess.Popen([sys.executable, "-m", "nbdscope", "live", "-i", "lo", "--port", str(port),
                             "-o", str(page)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=ENV)
    try:
        assert live.stderr is not None
        assert "capturing on lo" in live.stderr.readline()
        time.sleep(1.0)  # tcpdump starts listening
        server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=log", "memory", "4M",
                  f"logfile={log}"]
        with process(server, port=port):
            run(nbdsh(f"nbd://127.0.0.1:{port}", SCRIPT))
        time.sleep(0.5)
    finally:
        stop_process(live, signal.SIGINT, 30)
    assert live.returncode == 0
    data = plot_data(page.read_text())
    logged, _ = nbdkit_log(log)
    want = Counter(r.command for reqs in logged.values() for r in reqs)
    got: Counter[str] = Counter()
    for per in data["totals"].values():  # type: ignore[attr-defined]
        for name, t in per.items():
            if name != "NBD_CMD_DISC":
                got[name] += t["count"]
    assert got == want and want["NBD_CMD_WRITE"] == 6
    assert data["sizes"]["NBD_CMD_WRITE"]["sizes"] == {"13": [6, 6 * 8192]}  # type: ignore[index]
