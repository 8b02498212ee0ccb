"""Live TLS: nbdkit --tls=require (FORCEDTLS) with a PSK, once against a plaintext nbdinfo that keeps
haggling after NBD_REP_ERR_TLS_REQD (tls-client.may.3: permitted) and once against nbdinfo with the key
(a real upgrade: forcedtls.may.1). A correct pair must draw no tls-protocol finding either way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nbdscope.analysis.engine import Engine
from nbdscope.capture import read_captures
from tests.judging import silent
from tests.live import free_port, process, run, tcpdump

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdinfo", "psktool", "tcpdump"))
                                 or os.geteuid() != 0, reason="needs nbdkit, nbdinfo, psktool and root")]


def test_forcedtls_nbdkit_with_plaintext_and_tls_clients_is_silent(tmp_path: Path) -> None:
    keys, pcap, port = tmp_path / "keys.psk", tmp_path / "tls.pcap", free_port()
    run(["psktool", "-u", "alice", "-p", str(keys)])
    with tcpdump(pcap, port), process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--tls=require",
                                       f"--tls-psk={keys}", "memory", "1M"], port=port):
        run(["nbdinfo", f"nbd://127.0.0.1:{port}"], check=False, timeout=10)
        run(["nbdinfo", f"nbds://alice@127.0.0.1:{port}?tls-psk-file={keys}"], timeout=10)
    result = Engine().run(read_captures([str(pcap)]))
    assert [s.tls for s in result.sessions] == [False, True]  # the refused plaintext client, then the TLS one
    silent(result, "tls-protocol")
