"""Sources: capture files to per-connection byte streams (see nbdscope/vocab.py)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

from nbdscope.capture.linklayer import tcp_segment
from nbdscope.capture.pcapio.read import CaptureError, frames
from nbdscope.capture.tcp import Origin, TcpStreams
from nbdscope.vocab import CaptureProblem, StreamItem

__all__ = ["CaptureError", "PacketStream", "read_captures"]


class PacketStream:
    """Incremental packets-to-streams conversion, shared by files and live capture."""

    def __init__(self, source: str, extra_ports: Collection[int] = (), first_conn_id: int = 0,
                 trace: list[Origin] | None = None) -> None:
        self.tcp = TcpStreams(source, extra_ports, first_conn_id, trace)
        self.last_frame = 0
        self.last_time = 0.0

    def feed_packet(self, time: float, linktype: int, buf: bytes, frame: int) -> list[StreamItem]:
        self.last_frame, self.last_time = frame, time
        seg = tcp_segment(linktype, buf)
        return self.tcp.feed(seg, frame, time) if seg is not None else []

    def finish(self) -> list[StreamItem]:
        return self.tcp.finish(self.last_frame, self.last_time)

    @property
    def next_conn_id(self) -> int:
        return self.tcp.next_id


Progress = Callable[[str, int, int], None]  # path, frame number, bytes of the file read so far
PROGRESS_EVERY = 4096  # frames between progress callbacks


def read_captures(paths: Sequence[str], extra_ports: Collection[int] = (),
                  progress: Progress | None = None, reuse_buffers: bool = False,
                  trace: list[Origin] | None = None) -> Iterator[StreamItem]:
    """Stream items of every NBD connection in the given files, file by file.

    Raises CaptureError (before yielding anything for that file) when a file is
    not a capture at all; damage part-way yields a CaptureProblem and the rest
    of what was read. With ``reuse_buffers`` the data of a StreamData item is only
    valid until the next item is requested (faster; the engine copes). ``trace``, if
    given, receives where every delivered byte lies in its file (see capture/tcp.py;
    frame numbers start again with each file)."""
    conn_id = 0
    for path in paths:
        problems: list[str] = []
        position: list[Callable[[], int]] = []
        stream = PacketStream(path, extra_ports, conn_id, trace)
        feed = stream.feed_packet
        for number, time, linktype, data in frames(path, problems, position, reuse_buffers):
            items = feed(time, linktype, data, number)
            if items:
                yield from items
            if progress is not None and not number % PROGRESS_EVERY:
                progress(path, number, position[0]())
        for message in problems:
            yield CaptureProblem(path, stream.last_frame, message)
        yield from stream.finish()
        conn_id = stream.next_conn_id
