"""Capture I/O: the one reader of pcap and pcapng files (read.py), the one pcapng
writer (write.py), the made-up TCP framing the proxy writes its sessions in
(synth.py) and the redaction of read and write data in written packets
(redact.py). Everything that reads or writes a capture file goes through here."""

from nbdscope.capture.pcapio.read import (
    STDIN,
    Block,
    CaptureError,
    Frame,
    Packet,
    PcapHeader,
    frames,
    is_stream,
    open_capture,
    pcap_frames,
    records,
)
from nbdscope.capture.pcapio.write import PcapngWriter

__all__ = ["STDIN", "Block", "CaptureError", "Frame", "Packet", "PcapHeader", "PcapngWriter", "frames", "is_stream",
           "open_capture", "pcap_frames", "records"]
