"""Real outputs to check: what `nbdscope analyze` prints for a capture, and the JSONL the
proxy's watcher writes when it is handed that capture's bytes as the relay would hand them."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path
from typing import Any

from nbdscope import vocab as it
from nbdscope.capture import read_captures
from nbdscope.cli import main
from nbdscope.proxy import tap
from nbdscope.proxy.watcher import Watcher
from tests.oracles import CAPTURES

SHIPPED = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


@cache
def analyze(capture: Path, *options: str) -> str:
    """stdout of `nbdscope analyze OPTIONS CAPTURE` (in-process: the same code path, quicker)."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["analyze", *options, str(capture)])
    assert code == 0, (capture, options, code)
    return out.getvalue()


def lines(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def proxy_jsonl(capture: Path) -> bytes:
    """The --jsonl file of a proxy that relayed this capture's connections: the watcher gets the
    records the relay's tap would send (open, data, close), in capture order."""
    jsonl = io.BytesIO()
    watcher = Watcher(jsonl=jsonl, pcapng=None, quiet=True, redact=False, console=io.StringIO(),
                      log=lambda line: None)
    for item in read_captures([str(capture)]):
        if isinstance(item, it.StreamOpen):
            info = {"client": [item.client.host, item.client.port], "server": [item.server.host, item.server.port]}
            watcher.record(tap.OPEN, "c2s", item.conn, item.time, memoryview(json.dumps(info).encode()))
        elif isinstance(item, it.StreamData):
            watcher.record(tap.DATA, item.dir, item.conn, item.time, memoryview(bytes(item.data)))
        elif isinstance(item, it.StreamClose):
            watcher.record(tap.CLOSE, item.by or "c2s", item.conn, item.time, memoryview(b""))
        else:  # a relay loses nothing: captures with gaps are not replayed
            raise AssertionError(f"{capture.name}: {type(item).__name__} cannot come from a relay")
    watcher.engine.finish()
    watcher.flush()
    assert watcher.errors == 0
    return jsonl.getvalue()
