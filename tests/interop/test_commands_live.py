"""Real peers misbehaving on commands: nbdkit 1.32 with --oldstyle advertises every feature and
refuses them all (tflags.1, cmdflags.2), and nbdsh with strict mode off sends a FAST_ZERO the server
did not advertise (tflags.12). libnbd always sends a flush without a range, so cmd-flush.3 is tested
on wire scripts only (tests/unit/test_judge_commands.py)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.live import free_port, nbdsh, process, run, tcpdump
from tests.oracles import report

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump")) or os.geteuid() != 0,
                                 reason="needs nbdkit, tcpdump, libnbd's python module and root")]

TRY_ALL = """
for fn in (lambda: h.pwrite(b"x" * 512, 0), lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA), h.flush, h.flush,
           lambda: h.trim(512, 0), lambda: h.zero(512, 0), lambda: h.cache(512, 0)):
    try:
        fn()
        print("ok")
    except nbd.Error as e:
        print("refused", e.errnum)
h.shutdown()
"""


def _capture(tmp: Path, server: list[str], port: int, script: str) -> tuple[dict, str]:
    cap = tmp / "live.pcap"
    with process(server, port=port), tcpdump(cap, port):
        out = run(nbdsh(f"nbd://127.0.0.1:{port}", script))
    return report(cap), out


def test_oldstyle_nbdkit_refuses_what_it_advertised(tmp_path: Path) -> None:
    """tflags.1 and cmdflags.2: one finding per feature, at the end, with the number refused."""
    port = free_port()
    rep, out = _capture(tmp_path, ["nbdkit", "-f", "--oldstyle", "-p", str(port), "-i", "127.0.0.1", "memory", "1M"],
                        port, TRY_ALL)
    assert out.split() == ["ok"] + ["refused", "22"] * 6  # the client's own view: EINVAL for all but the write
    found = [a for a in rep["anomalies"] if a["rule"] == "advertised-refused"]
    per = Counter((a["check"], a["values"]["command"], a["values"]["refused"]) for a in found)
    assert per == Counter({("advertised-refused.unsupported-feature", "NBD_CMD_FLUSH", 2): 1,
                           ("advertised-refused.unsupported-feature", "NBD_CMD_TRIM", 1): 1,
                           ("advertised-refused.unsupported-feature", "NBD_CMD_WRITE_ZEROES", 1): 1,
                           ("advertised-refused.fua-refused", "NBD_CMD_WRITE", 1): 1})
    assert all(a["blame"] == "server" and a["severity"] == "error" for a in found)
    assert {a["rule"] for a in rep["anomalies"]} == {"advertised-refused"}  # CACHE may always fail


def test_nbdsh_unadvertised_fast_zero(tmp_path: Path) -> None:
    """tflags.12: the client is blamed; nbdkit (nozero filter, fastzeromode=none) answers EINVAL, as it should."""
    port = free_port()
    script = ("h.set_strict_mode(0)\n"
              "try:\n    h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO)\nexcept nbd.Error as e:\n    print(e.errnum)\n"
              "h.shutdown()\n")
    rep, out = _capture(tmp_path, ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "memory", "1M",
                                   "--filter=nozero", "fastzeromode=none"], port, script)
    checks = {a["check"]: a for a in rep["anomalies"]}
    assert "flag-not-advertised.fast-zero" in checks and checks["flag-not-advertised.fast-zero"]["blame"] == "client"
    assert out.split() == ["22"] and not [a for a in rep["anomalies"] if a["blame"] == "server"]
