"""Live: real peers made to break a statement of the replies part, captured with tcpdump on
loopback and judged (requirement ids in nbdscope/spec/requirements/replies.toml)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nbdscope.analysis.engine import Result
from nbdscope.pipeline import FileSource
from nbdscope.pipeline import run as analyze_run
from tests.judging import fired
from tests.live import free_port, nbdsh, process, run, tcpdump


def analyze_paths(paths: list[Path]) -> Result:
    return analyze_run(FileSource([str(p) for p in paths]))

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump", "nbdsh"))
                                 or os.geteuid() != 0, reason="needs nbdkit, nbdsh and root")]


def _eval_server(port: int, pread: str) -> list[str]:
    return ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "eval", "get_size=echo 1M", f"pread={pread}"]


def test_client_that_keeps_reading_after_eshutdown(tmp_path: Path) -> None:
    """transmission-end.5: nbdkit fails a read with NBD_ESHUTDOWN; nbdsh reads again instead of NBD_CMD_DISC."""
    port, cap = free_port(), tmp_path / "eshutdown.pcap"
    script = """
for _ in range(2):
    try:
        h.pread(512, 0)
    except nbd.Error:
        pass
h.shutdown()
"""
    with process(_eval_server(port, "echo ESHUTDOWN going away >&2; exit 1"), port=port), tcpdump(cap, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script))
    result = analyze_paths([cap])
    hits = fired(result.anomalies, "disconnect-protocol.request-after-shutdown", blame="client")
    assert len(hits) == 1
    assert not [a for a in result.anomalies if a.blame == "server"]  # nbdkit did what the spec asks


def test_client_zero_length_read(tmp_path: Path) -> None:
    """cmd-read.2: nbdsh with strict mode off sends a read of length 0."""
    port, cap = free_port(), tmp_path / "zero.pcap"
    script = """
h.set_strict_mode(0)
h.pread(0, 0)
h.shutdown()
"""
    with process(_eval_server(port, "dd if=/dev/zero count=$3 iflag=count_bytes status=none"), port=port), \
            tcpdump(cap, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script), check=False)
    result = analyze_paths([cap])
    fired(result.anomalies, "read-request.zero-length", blame="client")
