"""A real proxy (its relay forked as `nbdscope proxy --quiet --jsonl` forks it) in front of nbdkit, the watcher
on the compiled path: the records its tap sent are kept and replayed through the pure-Python path, which
must write the same JSONL and console byte for byte."""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from nbdscope import pipeline
from nbdscope.cli_proxy import ProxyPlan
from nbdscope.proxy import tap
from nbdscope.proxy.addresses import parse_address
from nbdscope.proxy.run import RelayOptions
from tests.bothways import built
from tests.live import free_port, process, run
from tests.tapreplay import watch

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not built(), reason="the compiled path (nbdscope._fastpath) was not built"),
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdcopy")),
                                 reason="needs nbdkit and nbdcopy")]


def test_a_real_proxy_on_the_compiled_path_writes_what_python_writes(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    kept: list[tap.Record] = []
    reading = tap.read_records

    def keeping(*args: Any) -> Iterator[tap.Record]:
        for kind, direction, conn, time, payload in reading(*args):
            kept.append((kind, direction, conn, time, memoryview(bytes(payload))))
            yield kind, direction, conn, time, payload

    monkeypatch.setattr(tap, "read_records", keeping)
    monkeypatch.delenv("NBDSCOPE_PURE", raising=False)
    up, front = free_port(), free_port()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(8 << 20))
    plan = ProxyPlan(parse_address(f"127.0.0.1:{front}"), parse_address(f"127.0.0.1:{up}"), RelayOptions(grace=1.0),
                     str(tmp_path / "live.jsonl"), None, False, True)
    console = io.StringIO()
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "8M"], port=up), ExitStack() as stack:
        addons, _ = plan.outputs(stack, console)
        source = plan.source(log=lambda line: None)
        assert source.wait_ready() is None

        def clients() -> None:
            try:
                uri = f"nbd://127.0.0.1:{front}"
                run(["nbdcopy", "--requests=16", "--request-size=16384", str(src), uri])
                run(["nbdcopy", "--requests=1", "--request-size=16384", uri, str(tmp_path / "back.bin")])
            finally:
                source.stop()

        thread = threading.Thread(target=clients)
        thread.start()
        result = pipeline.run(source, addons)
        thread.join()
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    messages = sum(s.messages for s in result.sessions)
    assert source.reader.native is not None and source.reader.native.taken > messages * 0.9
    written = (tmp_path / "live.jsonl").read_bytes()
    jsonl, text, _, taken = watch(kept, pure=True)
    assert taken == 0
    assert written.count(b"\n") > 200
    assert written == jsonl
    assert console.getvalue() == text
