"""A connection's TLS, decrypted with the peers' key log: ciphertext in, NBD decoded from the plaintext.

Once STARTTLS is acknowledged and a key log was given, every byte of either direction goes to the
decryptor (``nbdscope.tls``) instead of the NBD handlers. Ciphertext is still counted as ``TlsData``
(its offsets are the ciphertext's), so the TLS rules judge the records as before. The application
data that comes out goes through the ordinary decoding path, with the frame and time of the packet
that completed its record; a direction's first plaintext moves it from ``TLS`` back to the option
haggling (``Input.DECRYPTED``), which starts over inside TLS. The NBD messages of a decrypted
direction have offsets in its plaintext (which begins where the acknowledgement left the stream).

Where decryption stands is reported as a ``TlsData`` point (``nbytes`` 0) with ``decryption`` set
whenever it changes. When it gives up (no key, a record that fails authentication, lost bytes) both
directions go back to ``TLS`` and are counted, never decoded, from there on.

``Terminated`` stands in for the decryptor when a source hands over plaintext after STARTTLS itself
(a proxy that terminates TLS on both sides says so with a ``StreamNote`` of action "tls-plaintext"):
the same path, with nothing to decrypt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbdscope.decoder import events as ev
from nbdscope.decoder.state import Input, State
from nbdscope.tls.session import Decryptor, Plain, Status
from nbdscope.vocab import Direction

if TYPE_CHECKING:
    from nbdscope.decoder.buffer import ReceiveBuffer
    from nbdscope.decoder.connection import Connection

_HEAD = 11  # as connection.TLS_HEAD: the bytes that show a record's type and version


class Terminated:
    """The decryptor's part when the source already has the plaintext (it terminated TLS itself)."""

    status: Status = "decrypted"
    detail = "TLS terminated by the source (the proxy): plaintext handed over"
    failed = False

    def __init__(self) -> None:
        self.fed: dict[Direction, int] = {"c2s": 0, "s2c": 0}
        self.spans: dict[Direction, list[tuple[int, int, int]]] | None = None

    def feed(self, direction: Direction, data: bytes | memoryview, frame: int, time: float) -> list[Plain]:
        at = self.fed[direction]
        self.fed[direction] += len(data)
        if self.spans is not None:
            self.spans[direction].append((at, len(data), at))
        return [(direction, bytes(data), frame, time)] if data else []

    def gap(self, direction: Direction, nbytes: int, frame: int) -> None:
        self.fed[direction] += nbytes

    def finish(self) -> list[Plain]:
        return []

    def track_spans(self) -> None:
        self.spans = {"c2s": [], "s2c": []}

    def take_plain_spans(self, direction: Direction) -> list[tuple[int, int, int]]:
        spans = self.spans[direction] if self.spans is not None else []
        if self.spans is not None:
            self.spans[direction] = []
        return spans

    def settled(self, direction: Direction) -> int:
        return self.fed[direction]


class TlsLayer:
    def __init__(self, conn: Connection, decryptor: Decryptor | Terminated) -> None:
        self.conn = conn
        self.decryptor = decryptor
        self.fed: dict[Direction, int] = {"c2s": 0, "s2c": 0}  # ciphertext offsets
        self.backlog: list[tuple[Direction, bytes, int, float]] = []  # bytes that came with the acknowledgement
        self.reported = "pending"
        # redaction (the decoder tracks payload ranges): where each record's plaintext lies on the wire, so that
        # the ranges of read and write data it reports are ciphertext ranges (AEAD encrypts byte for byte)
        self.plain_base: dict[Direction, int] = {"c2s": 0, "s2c": 0}
        self.cipher_base: dict[Direction, int] = {"c2s": 0, "s2c": 0}
        self.spans: dict[Direction, list[tuple[int, int, int]]] | None = None
        if conn._c.payload is not None:
            self.decryptor.track_spans()
            self.spans = {"c2s": [], "s2c": []}
        # what was negotiated in plaintext does not survive the upgrade (opt-starttls.4): it is negotiated again
        conn.structured, conn.extended, conn.contexts = False, False, {}
        conn.pending.clear()

    def begin(self, side: ReceiveBuffer, rest: bytes) -> None:
        """The bytes of a direction that were buffered behind the acknowledgement (already counted)."""
        self.fed[side.dir] = self.plain_base[side.dir] = side.fed
        self.cipher_base[side.dir] = side.fed - len(rest)
        if rest:
            self.backlog.append((side.dir, rest, side.frame, side.time))

    def feed(self, direction: Direction, data: bytes | memoryview, frame: int, time: float) -> list[ev.Event]:
        conn = self.conn
        side = conn._c if direction == "c2s" else conn._s
        side.frame, side.time = frame, time
        out: list[ev.Event] = []
        conn.out = out
        self.drain()
        if conn.tls_layer is not self:  # decryption ended in the backlog: counted from here on
            out.extend(conn.feed(direction, data, frame=frame, time=time))
            conn.out = out
            return out
        start = self.fed[direction]
        self.fed[direction] += len(data)
        if not isinstance(self.decryptor, Terminated):  # (terminated: no ciphertext here to count or judge)
            conn.tls_data(side, start, len(data), bytes(data[:_HEAD]))
        self._after(side, self.decryptor.feed(direction, data, frame, time))
        return out

    def drain(self) -> None:
        """Decrypt what came with the acknowledgement (the decoder was busy with the handshake then)."""
        backlog, self.backlog = self.backlog, []
        for direction, data, frame, time in backlog:
            if self.conn.tls_layer is not self:
                return
            side = self.conn._c if direction == "c2s" else self.conn._s
            self._after(side, self.decryptor.feed(direction, data, frame, time))

    def settled(self, direction: Direction) -> int:
        """The stream offset up to which the ciphertext's records are complete: its data ranges are known."""
        return self.cipher_base[direction] + self.decryptor.settled(direction)

    def to_wire(self, direction: Direction, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Payload ranges in the decrypted stream -> the ciphertext bytes that carried them."""
        if self.spans is None:
            return ranges
        spans = self.spans[direction]
        plain, cipher = self.plain_base[direction], self.cipher_base[direction]
        spans += [(plain + p, plain + p + n, cipher + c) for p, n, c in self.decryptor.take_plain_spans(direction)]
        out: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if hi <= plain:  # before STARTTLS: plaintext on the wire
                out.append((lo, hi))
                continue
            for p0, p1, c in spans:
                a, b = max(lo, p0), min(hi, p1)
                if a < b:
                    out.append((c + a - p0, c + b - p0))
        if ranges:  # ranges come in stream order: records wholly before the last one are done with
            last = ranges[-1][1]
            spans[:] = [s for s in spans if s[1] > last] or spans[-1:]
        return out

    def close(self) -> None:
        """The connection ends: decrypt what is left, and report a session that never got its key."""
        self.drain()
        if self.conn.tls_layer is self:
            self._after(self.conn._s, self.decryptor.finish())

    def gap(self, side: ReceiveBuffer, nbytes: int) -> None:
        self.decryptor.gap(side.dir, nbytes, side.frame)
        self._after(side, [])

    def _after(self, side: ReceiveBuffer, plains: list[Plain]) -> None:
        if self.decryptor.status == "decrypted":
            self._status(side)
        out = self.conn.out
        for direction, plain, frame, time in plains:
            self._deliver(direction, plain, frame, time, out)
        if self.decryptor.failed:
            self._status(side)
            self._give_up(side)

    def _deliver(self, direction: Direction, plain: bytes, frame: int, time: float, out: list[ev.Event]) -> None:
        conn = self.conn
        side = conn._c if direction == "c2s" else conn._s
        if side.state is State.TLS:
            conn.machine.fire(Input.DECRYPTED, side)
        conn.tls_layer = None  # the plaintext takes the ordinary path
        try:
            events = conn.feed(direction, plain, frame=frame, time=time)
        finally:
            conn.tls_layer = self
            conn.out = out
        out.extend(events)

    def _status(self, side: ReceiveBuffer) -> None:
        status = self.decryptor.status
        if status == self.reported:
            return
        self.reported = status
        at = self.fed[side.dir]
        self.conn.emit(ev.TlsData, side, at, at, nbytes=0, decryption=status, detail=self.decryptor.detail)

    def _give_up(self, side: ReceiveBuffer) -> None:
        conn = self.conn
        conn.machine.fire(Input.UNDECRYPTABLE, side)
        for s in (conn._c, conn._s):
            s.buf.clear()
            s.pos = s.skip = 0
            s.sink = None
            s.fed = max(s.fed, self.fed[s.dir])  # counting goes on at the ciphertext's offsets
        conn.tls_layer = None
