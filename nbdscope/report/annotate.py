"""Write a capture back as pcapng with nbdscope's findings as packet comments.

Every original packet is kept with its original bytes and timestamp (pcap
timestamps are carried over exactly, at their own resolution; pcapng blocks
other than packets are copied as they are, and so are packets that get no
comment), so frame numbers stay those of the input, which are the frame numbers
`analyze` reports. Each anomaly becomes one opt_comment on its frame, so any
Wireshark shows it in `frame.comment` (or `pkt_comment` in older ones) without
the plugin.

Reading and writing are capture/pcapio's; with redaction, the spans of read and
write data to zero in each frame come from capture/pcapio/redact.py, learnt
during the analysis, so nothing here parses TCP or NBD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.capture.pcapio import Block, Packet, PcapngWriter, records
from nbdscope.capture.pcapio.redact import Spans, apply_spans

HEADER_COMMENT = "annotated by nbdscope: anomalies are packet comments"


def comment_text(a: Anomaly) -> str:
    """One finding as a packet comment: what `nbdscope rules` calls it, then the details."""
    return f"nbdscope {a.rule} [{a.severity}, blame {a.blame}, session {a.session}]: {a.message}"


def write_annotated(path: str, out: BinaryIO, anomalies: Iterable[Anomaly], redact: Spans | None = None) -> int:
    """Copy ``path`` to ``out`` as pcapng with the anomalies as comments and, given ``redact``,
    those byte spans zeroed; returns the frames written (a damaged input ends the copy where
    the analysis stopped reading too)."""
    comments: dict[int, list[str]] = {}
    for a in anomalies:
        comments.setdefault(a.frame, []).append(comment_text(a))
    writer = PcapngWriter(out)
    number = 0
    for rec in records(path, []):
        if isinstance(rec, Packet):
            number = rec.number
            notes = comments.get(number, ())
            data = apply_spans(rec.data, redact.get(number)) if redact is not None else rec.data
            if rec.block is not None and not notes and data is rec.data:
                writer.raw(rec.block)
            else:
                writer.packet(rec.iface, rec.ticks, data, rec.wirelen, notes, rec.options, rec.endian)
        elif isinstance(rec, Block):
            writer.raw(rec.raw)
        else:
            writer.section([HEADER_COMMENT])
            writer.interface(rec.linktype, rec.snaplen, rec.tsresol)
    return number
