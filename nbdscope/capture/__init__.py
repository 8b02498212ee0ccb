"""Sources: capture files to per-connection byte streams (see nbdscope/vocab.py).

The link layer is linklayer.py, TCP reassembly and NBD detection tcp.py, the file
formats pcapio/, and the loop that joins them per packet streams.py."""

from __future__ import annotations

from nbdscope.capture.pcapio.read import CaptureError
from nbdscope.capture.streams import PROGRESS_EVERY, PacketStream, Progress, read_captures

__all__ = ["PROGRESS_EVERY", "CaptureError", "PacketStream", "Progress", "read_captures"]
