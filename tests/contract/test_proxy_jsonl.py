"""The --jsonl file of a real proxy run (nbdkit behind it, libnbd tools in front) against
the schemas: the in-process replay in test_outputs.py covers the watcher, this covers the
whole command."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.contract.checks import check_jsonl
from tests.contract.outputs import lines
from tests.live import free_port, process, proxy, run

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdcopy", "nbdinfo")),
                                 reason="needs nbdkit and libnbd tools")]


def test_a_real_proxy_jsonl_meets_the_schemas(tmp_path: Path) -> None:
    up, front = free_port(), free_port()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1 << 20))
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"], port=up), \
            proxy(tmp_path, f"127.0.0.1:{front}", f"127.0.0.1:{up}") as px:
        uri = f"nbd://127.0.0.1:{front}"
        run(["nbdcopy", str(src), uri])
        run(["nbdinfo", "--map", uri])
        run(["nbdinfo", "--list", uri])
    assert px.returncode == 0
    text = (tmp_path / "live.jsonl").read_text()
    records = check_jsonl(text)
    assert len(records) == len(lines(text)) > 20
    assert {"NBD_CMD_WRITE", "NBD_REPLY_TYPE_BLOCK_STATUS", "NBD_REP_SERVER", "CONNECTION_END"} <= \
           {r["type"] for r in records}
