"""Finding NBD in a TCP flow that the capture joined part-way: a search for plausible
transmission headers in the first bytes of each direction.

A flow whose SYN the capture missed need not begin at a message: it may begin inside a
write payload or a read reply's data. TcpStreams then looks at the first ``WINDOW`` bytes
of each direction for a header that makes sense:

- a request (``NBD_REQUEST_MAGIC`` or the extended one) with a known command, no reserved
  flag bits and, for a write, a payload of at most ``SANE_PAYLOAD`` bytes;
- a simple reply with a known error value (0 included);
- a structured or extended reply chunk with a known (or error) reply type, no reserved
  flag bits and a payload of at most ``SANE_PAYLOAD`` bytes.

One such header is weak evidence; it is strong when the other direction holds a header
of the opposite kind (requests one way, replies the other), or when a second header
starts exactly where the first message ends (a write and its payload, a structured chunk
and its payload, a simple reply without data). Which side is the client follows from
which side sends requests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from nbdscope.spec import Cmd
from nbdscope.spec import magics as M
from nbdscope.spec.codes import (
    COMMANDS,
    ERRORS,
    EXTENDED_REPLY_HEADER,
    EXTENDED_REQUEST_HEADER,
    REPLY_TYPES,
    REQUEST_HEADER,
    SIMPLE_REPLY_HEADER,
    STRUCTURED_REPLY_HEADER,
    is_reply_type_error,
)
from nbdscope.spec.flags import COMMAND_FLAGS, REPLY_FLAGS

WINDOW = 256 << 10  # bytes of each direction searched (and at most kept, plus one segment) before giving up
SANE_PAYLOAD = 64 << 20  # a header announcing a longer payload is not believed
_LONGEST = 32  # the longest header searched for
_MAGICS = (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES, M.SIMPLE_REPLY_MAGIC_BYTES,
           M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES)
_REQ = struct.Struct(">IHHQQI")
_EREQ = struct.Struct(">IHHQQQ")
_SREP = struct.Struct(">II")
_CHUNK = struct.Struct(">IHHQI")
_ECHUNK = struct.Struct(">IHHQQQ")
_WRITE = int(Cmd.WRITE)


def _all(buf: bytes, magic: bytes) -> list[int]:
    out, i = [], buf.find(magic)
    while i >= 0:
        out.append(i)
        i = buf.find(magic, i + 1)
    return out


def judge(buf: bytes, i: int) -> tuple[str, int] | bool | None:
    """``("request" or "reply", length of the whole message or -1 when unknown)`` when a
    plausible header starts at ``buf[i]``, None when none does, True when more bytes are needed."""
    head = buf[i:i + 4]
    n = len(buf) - i
    if head in (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES):
        ext = head == M.EXTENDED_REQUEST_MAGIC_BYTES
        size = EXTENDED_REQUEST_HEADER if ext else REQUEST_HEADER
        if n < size:
            return True
        _, flags, cmd, _cookie, _offset, length = (_EREQ if ext else _REQ).unpack_from(buf, i)
        if cmd not in COMMANDS or COMMAND_FLAGS.reserved(flags) or (cmd == _WRITE and length > SANE_PAYLOAD):
            return None
        return "request", size + (length if cmd == _WRITE else 0)
    if head == M.SIMPLE_REPLY_MAGIC_BYTES:
        if n < SIMPLE_REPLY_HEADER:
            return True
        _, error = _SREP.unpack_from(buf, i)
        return ("reply", -1) if error in ERRORS else None
    if head in (M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES):
        ext = head == M.EXTENDED_REPLY_MAGIC_BYTES
        size = EXTENDED_REPLY_HEADER if ext else STRUCTURED_REPLY_HEADER
        if n < size:
            return True
        if ext:
            _, flags, rtype, _cookie, _offset, length = _ECHUNK.unpack_from(buf, i)
        else:
            _, flags, rtype, _cookie, length = _CHUNK.unpack_from(buf, i)
        if REPLY_FLAGS.reserved(flags) or length > SANE_PAYLOAD:
            return None
        if rtype not in REPLY_TYPES and not is_reply_type_error(rtype):
            return None
        return "reply", size + length
    return None


@dataclass(slots=True)
class HeaderSearch:
    """The search in one direction, fed its bytes in order. It keeps only the few bytes
    of a header that may continue in the next piece, never the window itself."""

    seen: int = 0  # bytes of the direction fed so far
    tail: bytes = b""  # the last bytes fed, from the first magic that could not be judged yet
    kinds: set[str] = field(default_factory=set)  # of the plausible headers found: "request", "reply"
    found: int = 0  # plausible headers found
    ends: set[int] = field(default_factory=set)  # stream offsets where the messages found so far end
    chained: bool = False  # a header began exactly where an earlier message ended
    settled: set[int] = field(default_factory=set)  # offsets in the tail already judged

    @property
    def spent(self) -> bool:
        """The window has passed."""
        return self.seen >= WINDOW

    def feed(self, data: bytes | memoryview) -> None:
        if self.spent:
            self.seen += len(data)
            return
        buf = self.tail + bytes(data[:WINDOW - self.seen + _LONGEST])
        base = self.seen - len(self.tail)
        self.seen += len(data)
        hits = sorted({i for magic in _MAGICS for i in _all(buf, magic)})
        waiting, settled = len(buf), set()  # the first candidate that needs more bytes; those judged after it
        for i in hits:
            if base + i in self.settled:
                continue
            verdict = judge(buf, i)
            if verdict is True:
                waiting = min(waiting, i)
                continue
            if i > waiting:
                settled.add(base + i)
            if verdict:
                self._found(base + i, *verdict)
        keep = max(0, min(waiting, len(buf) - 3))  # a magic may also straddle the pieces
        self.tail, self.settled = buf[keep:], settled

    def _found(self, at: int, kind: str, size: int) -> None:
        if at in self.ends:
            self.chained = True
        self.kinds.add(kind)
        self.found += 1
        if size > 0 and len(self.ends) < 64:
            self.ends.add(at + size)


def client_side(a: HeaderSearch, b: HeaderSearch) -> tuple[int, bool] | None:
    """Which side (0: the one ``a`` searched) is the client, and whether the evidence is
    strong, from the headers found in both directions; None when none was found."""
    for side, mine, other in ((0, a, b), (1, b, a)):
        if "request" in mine.kinds and "reply" not in mine.kinds and "request" not in other.kinds:
            return side, "reply" in other.kinds or mine.chained
    for side, mine, other in ((0, a, b), (1, b, a)):
        if "reply" in mine.kinds and not other.kinds:
            return 1 - side, mine.chained
    return None
