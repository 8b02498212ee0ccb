"""Capture I/O: opening an input (opening.py: files, pipes, compression), the one reader of pcap and
pcapng files (read.py), the one pcapng
writer (write.py), the made-up TCP framing the proxy writes its sessions in
(synth.py) and the redaction of read and write data in written packets
(redact.py). Everything that reads or writes a capture file goes through here."""

from nbdscope.capture.pcapio.opening import STDIN, CaptureError, is_stream, open_capture
from nbdscope.capture.pcapio.read import Block, Frame, Packet, PcapHeader, frames, pcap_frames, records
from nbdscope.capture.pcapio.write import PcapngWriter

__all__ = ["STDIN", "Block", "CaptureError", "Frame", "Packet", "PcapHeader", "PcapngWriter", "frames", "is_stream",
           "open_capture", "pcap_frames", "records"]
