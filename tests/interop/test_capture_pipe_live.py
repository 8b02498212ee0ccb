"""`tcpdump -U -w - | nbdscope analyze -` while the capture is running (issue 15, "Pipes"):
nbdscope reads the pcap from its standard input as tcpdump writes it. The oracle is nbdkit's log
filter: every request it logged comes out of the piped analysis with the same command, offset and
length; and the JSONL lines arrive while tcpdump still runs, not only once it has exited."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbdscope.capture.processes import stop_process
from tests.live import ENV, free_port, nbdsh, process, run
from tests.oracles import ROOT, nbdkit_log

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump")) or os.geteuid() != 0,
                                 reason="needs nbdkit, tcpdump and root")]

SCRIPT = """
h.pwrite(b'x' * 8192, 0)
h.pread(4096, 4096)
h.flush()
h.shutdown()
"""


def test_analyze_reads_a_running_tcpdump_from_stdin(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "nbdkit.log"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-n", "-U", "--immediate-mode", "-w", "-",
                             f"tcp port {port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    analyze = subprocess.Popen([sys.executable, "-u", "-m", "nbdscope", "analyze", "--format", "jsonl", "-"],
                               stdin=dump.stdout, stdout=subprocess.PIPE, stderr=open(tmp_path / "err", "wb"),
                               cwd=ROOT, env=ENV)
    assert dump.stdout is not None and analyze.stdout is not None
    dump.stdout.close()  # analyze holds the pipe now
    try:
        time.sleep(1.5)  # tcpdump starts listening
        server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=log", "memory", "1M",
                  f"logfile={log}"]
        with process(server, port=port):
            run(nbdsh(f"nbd://127.0.0.1:{port}", SCRIPT))
            # the first line arrives while tcpdump still runs (bounded wait: a reader that waits for
            # a full buffer would otherwise hang here)
            assert select.select([analyze.stdout.fileno()], [], [], 20)[0], "no output while the capture runs"
            first = analyze.stdout.readline()
            assert dump.poll() is None
    finally:
        stop_process(dump, signal.SIGINT, 10)
    out = analyze.stdout.read()  # the rest, once tcpdump has ended the pipe (a read of the same buffer)
    assert analyze.wait(60) == 0, (tmp_path / "err").read_text()
    text = (first + out).decode()
    lines = [json.loads(x) for x in text.splitlines() if x.strip()]
    decoded = [(r["type"], r["offset"], r["length"]) for r in lines
               if r.get("dir") == "c2s" and r["type"].startswith("NBD_CMD_") and r["type"] != "NBD_CMD_DISC"]
    logged, _ = nbdkit_log(log)
    want = [(r.command, r.offset, r.length) for reqs in logged.values() for r in reqs]
    assert want and sorted(decoded) == sorted(want)
