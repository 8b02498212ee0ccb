"""Wireshark cross-check through pyshark: for every NBD message tshark 4.0 decodes
in the shipped captures, nbdscope decoded the same message (magic kind, cookie,
type, offset, length, error) at the same frame, or earlier when the message spans
several segments (tshark reports the frame that completes the PDU, nbdscope the
one that carries the header). tshark decodes only simple transmission messages;
nbdscope must decode at least all of those."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.oracles import CAPTURES, jsonl, messages

pyshark = pytest.importorskip("pyshark")
pytestmark = [pytest.mark.interop, pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")]

REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
COMMANDS = ["NBD_CMD_READ", "NBD_CMD_WRITE", "NBD_CMD_DISC", "NBD_CMD_FLUSH", "NBD_CMD_TRIM", "NBD_CMD_CACHE",
            "NBD_CMD_WRITE_ZEROES", "NBD_CMD_BLOCK_STATUS", "NBD_CMD_RESIZE"]
PCAPS = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


def tshark_messages(capture: Path) -> list[dict[str, int]]:
    # tshark 4.0 finds NBD heuristically on any TCP port, so no decode-as is needed
    cap = pyshark.FileCapture(str(capture), display_filter="nbd", keep_packets=False)
    out = []
    try:
        for pkt in cap:
            for layer in pkt.get_multiple_layers("nbd"):
                fields = {"frame": int(pkt.number), "magic": int(layer.get_field_value("magic"), 16),
                          "handle": int(layer.get_field_value("handle"), 16)}
                for name in ("type", "len", "error"):
                    value = layer.get_field_value(name)
                    if value is not None:
                        fields[name] = int(value)
                offset = layer.get_field_value("from")
                if offset is not None:
                    fields["from"] = int(offset, 16)
                out.append(fields)
    finally:
        cap.close()
    return out


@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: p.name)
def test_nbdscope_decodes_everything_tshark_does(capture: Path) -> None:
    records = messages(jsonl(capture))
    theirs = tshark_messages(capture)
    requests = [r for r in records if r["dir"] == "c2s" and r["type"].startswith("NBD_CMD_")]
    replies = [r for r in records if r["type"] == "NBD_SIMPLE_REPLY"]
    matched = 0
    for m in theirs:
        if m["magic"] == REQUEST_MAGIC:
            cands = [r for r in requests if r["cookie"] == m["handle"] and r["type"] == COMMANDS[m["type"]]
                     and r["offset"] == m["from"] and r["length"] == m["len"] and r["frame"] <= m["frame"]]
        elif m["magic"] == SIMPLE_REPLY_MAGIC:
            cands = [r for r in replies if r["cookie"] == m["handle"] and r.get("error", 0) == m.get("error", 0)
                     and r["frame"] <= m["frame"]]
        else:
            continue
        assert cands, f"{capture.name}: tshark decoded {m} but nbdscope has no such message"
        best = max(cands, key=lambda r: r["frame"])
        assert m["frame"] - best["frame"] <= 64, (m, best)
        matched += 1
    # nbdscope decodes everything tshark does and more (handshakes, structured replies, ...)
    assert len(records) >= matched
    print(f"{capture.name}: tshark decoded {len(theirs)} NBD messages, nbdscope {len(records)}")
