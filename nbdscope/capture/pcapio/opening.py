"""Opening a capture for reading: a file, standard input, a FIFO, or any of them compressed (gzip, zstd,
lz4), with the format recognised from the first bytes. read.py reads what this opens."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import sys
import zlib
from typing import IO, cast

from nbdscope.capture.pcapio.write import PCAPNG_SHB

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}


class CaptureError(Exception):
    """The input cannot be read at all; the message names the file and the reason."""


STDIN = "-"
"""The input name that means standard input (``tcpdump -U -w - | nbdscope analyze -``)."""

_COMPRESSED = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4"}


class ByteStream:
    """A forward-only byte stream (a pipe, standard input, or a decompressor over either or over a file),
    with the bytes read to recognise the format put back in front.

    ``read(n)`` returns n bytes unless the stream ends; ``readinto`` returns what one read of the layer
    below gives, so a pcap arriving through a pipe is decoded as it arrives (tcpdump -U) instead of a
    megabyte at a time. ``raw`` and ``tell`` serve the progress bar: bytes of the outermost input."""

    def __init__(self, head: bytes, f: IO[bytes] | io.BufferedIOBase, raw: object = None) -> None:
        self.head = head
        self.f = f
        self._read1 = getattr(f, "read1", f.read)
        self.raw = raw if raw is not None else self
        self.taken = 0

    def read(self, n: int, /) -> bytes:
        parts = [self._take(n)]
        got = len(parts[0])
        while got < n:
            chunk = self._take(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def readinto(self, view: memoryview, /) -> int:
        chunk = self._take(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    def _take(self, n: int) -> bytes:
        if self.head:
            chunk, self.head = self.head[:n], self.head[n:]
        else:
            chunk = self._read1(n)
        self.taken += len(chunk)
        return chunk

    def tell(self) -> int:
        return self.taken

    def close(self) -> None:
        self.f.close()


def _read_head(f: IO[bytes] | io.BufferedIOBase, n: int) -> bytes:
    """The first n bytes (fewer only at the end), however the stream delivers them."""
    read1 = getattr(f, "read1", f.read)
    head = b""
    while len(head) < n:
        chunk = read1(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _decompressor(kind: str, f: ByteStream) -> IO[bytes]:
    """A reader of the decompressed bytes (gzip from the standard library, zstd and lz4 from their
    well-kept bindings, zstandard and lz4)."""
    src = cast(IO[bytes], f)
    if kind == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=src, mode="rb"))
    if kind == "zstd":
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True))
    import lz4.frame  # type: ignore[import-untyped]

    return cast(IO[bytes], lz4.frame.LZ4FrameFile(src, mode="rb"))


def open_capture(path: str) -> tuple[io.BufferedIOBase, str]:
    """Open a capture (``-`` for standard input), transparently decompressing gzip, zstd or lz4 (as
    Wireshark writes them); return the stream and its format, ``pcap`` or ``pcapng``.

    A seekable uncompressed file is returned as it is (the fastest path); anything else becomes a
    ByteStream. Its ``raw.tell`` measures progress in bytes of the input as stored."""
    try:
        raw: IO[bytes] = sys.stdin.buffer if path == STDIN else open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        seekable = raw.seekable()
        head = _read_head(raw, 4)
        kind = _COMPRESSED.get(head[:4]) or _COMPRESSED.get(head[:2])
        if seekable and kind is None:
            raw.seek(0)
            f: io.BufferedIOBase = raw  # type: ignore[assignment]
        else:
            outer = ByteStream(head, raw)
            f = outer  # type: ignore[assignment]
            if kind is not None:
                inner = _decompressor(kind, outer)
                head = _read_head(inner, 4)
                f = ByteStream(head, inner, raw=outer)  # type: ignore[assignment]
    except (OSError, EOFError, zlib.error, ValueError, RuntimeError) as exc:
        raw.close()
        raise CaptureError(f"{path}: corrupt compressed data: {exc}") from None
    if len(head) < 4:
        f.close()
        raise CaptureError(f"{path}: empty or too short to be a capture")
    if head in PCAP_MAGICS:
        return f, "pcap"
    if struct.unpack("<I", head)[0] == PCAPNG_SHB:
        return f, "pcapng"
    f.close()
    raise CaptureError(f"{path}: not a pcap or pcapng file (starts with {head.hex()})")


def is_stream(path: str) -> bool:
    """Whether reading the input consumes it (standard input, a FIFO, a process substitution):
    such an input can be read once only, so nothing may open it to check it first."""
    if path == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
