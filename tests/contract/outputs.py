"""Real outputs to check: what `nbdscope analyze` prints for a capture, and the JSONL the
proxy writes when its tap reader is handed that capture's bytes as the relay would hand them."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path
from typing import Any

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine
from nbdscope.capture import read_captures
from nbdscope.cli import main
from nbdscope.proxy import tap
from nbdscope.proxy.source import TapReader
from nbdscope.report.outputs import JsonlLines
from tests.oracles import CAPTURES, NOT_MESSAGES, messages

__all__ = ["NOT_MESSAGES", "SHIPPED", "analyze", "lines", "messages", "proxy_jsonl", "tap_records"]

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
    """The --jsonl file of a proxy that relayed this capture's connections: the proxy's tap reader gets
    the records the relay's tap would send (open, data, close), in capture order, and the pipeline
    writes them as the proxy does."""
    jsonl = io.BytesIO()
    result = Engine([JsonlLines(jsonl)]).run(TapReader(log=lambda line: None).items(tap_records(capture)))
    assert not any(a.rule == "internal-error" for a in result.anomalies)
    return jsonl.getvalue()


def tap_records(capture: Path) -> list[tap.Record]:
    """The records the relay's tap would send for this capture's connections (open, data, close), in capture
    order."""
    records: list[tap.Record] = []
    for item in read_captures([str(capture)]):
        if isinstance(item, it.StreamOpen):
            info = {"client": [item.client.host, item.client.port], "server": [item.server.host, item.server.port]}
            records.append((tap.OPEN, "c2s", item.conn, item.time, memoryview(json.dumps(info).encode())))
        elif isinstance(item, it.StreamData):
            records.append((tap.DATA, item.dir, item.conn, item.time, memoryview(bytes(item.data))))
        elif isinstance(item, it.StreamClose):
            records.append((tap.CLOSE, item.by or "c2s", item.conn, item.time, memoryview(b"")))
        elif isinstance(item, it.TimeOrigin):
            continue  # the proxy's times count from its first connection
        else:  # a relay loses nothing: captures with gaps are not replayed
            raise AssertionError(f"{capture.name}: {type(item).__name__} cannot come from a relay")
    return records
