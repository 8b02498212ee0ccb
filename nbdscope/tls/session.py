"""Decrypting one TLS session, both directions, with the peers' key log (sans-IO).

Fed each direction's bytes after NBD_OPT_STARTTLS was acknowledged, in capture order, it hands back
the application data of each record, with the frame and time of the bytes that completed the record.
It reads the client random from the ClientHello and the version and suite from the ServerHello; then:

- TLS 1.3: after the ServerHello each side's records are under its handshake traffic secret until its
  Finished, then under its application secret; a KeyUpdate moves that side to the next secret,
  derived here. ChangeCipherSpec records (compatibility mode) are passed over.
- TLS 1.2: each side's records are protected from its ChangeCipherSpec on, with keys from the
  CLIENT_RANDOM master secret.

``status`` is "pending" until a record opens ("decrypted"), or why not: "no-key" (the log has no
secrets for this session, or its secrets open nothing) or "undecryptable" (a record failed
authentication after others opened, the capture lost bytes, a suite that is not AEAD, ...). Once
failed it stays failed: the caller goes back to counting bytes. A growing key log (live, proxy) may
lack the key when the first protected records arrive: up to ``HOLD`` records (both directions, in order) wait for
it. ``take_plain_spans`` maps plaintext back to the ciphertext bytes that carried it (redaction)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from nbdscope.spec import tlswire as W
from nbdscope.tls import hello, schedule
from nbdscope.tls.keylog import KeyLog
from nbdscope.tls.records import AuthError, Framer, Protection, Record, RecordError
from nbdscope.vocab import Direction

_T = TypeVar("_T")
HOLD = 128  # protected records held (both directions) while a growing key log lacks their key
Status = Literal["pending", "decrypted", "no-key", "undecryptable"]
Plain = tuple[Direction, bytes, int, float]  # direction, application data, frame and time of its record's end
_LABELS = {("c2s", "handshake"): W.CLIENT_HANDSHAKE, ("s2c", "handshake"): W.SERVER_HANDSHAKE,
           ("c2s", "application"): W.CLIENT_TRAFFIC_0, ("s2c", "application"): W.SERVER_TRAFFIC_0}


class _Failed(Exception):
    def __init__(self, status: Status, reason: str, auth: bool = False) -> None:
        super().__init__(reason)
        self.status, self.reason, self.auth = status, reason, auth


@dataclass
class _Side:
    framer: Framer = field(default_factory=Framer)
    messages: hello.Messages = field(default_factory=hello.Messages)
    epoch: Literal["plain", "handshake", "application"] = "plain"
    protection: Protection | None = None
    secret: bytes = b""  # TLS 1.3: the current application secret, for KeyUpdate
    # per record of application data, when asked for (redaction): (plaintext offset, length, ciphertext offset)
    spans: list[tuple[int, int, int]] | None = None
    plain: int = 0  # plaintext bytes handed out


class Decryptor:
    def __init__(self, keys: KeyLog) -> None:
        self.keys = keys
        self.sides: dict[Direction, _Side] = {"c2s": _Side(), "s2c": _Side()}
        self.client_random: bytes | None = None
        self.server: hello.ServerHello | None = None
        self.suite: W.Suite | None = None
        self.status: Status = "pending"
        self.reason = ""
        self.auth_failed = False  # the failure was a record failing authentication after others opened
        self.failed_frame = 0
        self.repeated = 0  # records that came twice, byte for byte, and were passed over the second time
        # protected records waiting for a key, both directions in arrival order (NBD replies follow requests)
        self.held: deque[tuple[Direction, Record, int, float]] = deque()

    @property
    def failed(self) -> bool:
        return self.status in ("no-key", "undecryptable")

    @property
    def detail(self) -> str:
        """What was decrypted (version and suite), or why not."""
        if self.status == "decrypted" and self.server is not None and self.suite is not None:
            return f"{W.VERSION_NAMES.get(self.server.version, hex(self.server.version))}, {self.suite.name}"
        return self.reason

    # ------------------------------------------------------------ input

    def feed(self, direction: Direction, data: bytes | memoryview, frame: int, time: float) -> list[Plain]:
        out: list[Plain] = []
        if self.failed:
            return out
        side = self.sides[direction]
        try:
            for record in side.framer.feed(data):
                self._arrived(direction, record, frame, time, out)
            self._retry(out)
        except _Failed as exc:
            self._fail(exc, frame)
        except RecordError as exc:
            self._fail(_Failed("undecryptable", f"{exc} (frame {frame})"), frame)
        return out

    def gap(self, direction: Direction, nbytes: int, frame: int) -> None:
        """The capture lost bytes: records cannot be framed or numbered past them."""
        if not self.failed:
            self._fail(_Failed("undecryptable", f"the capture lost {nbytes} bytes of TLS records (frame {frame})"),
                       frame)

    def finish(self) -> list[Plain]:
        """The connection ended: what the key log gained since the last look opens, else the session still
        waiting has no key (a short connection can end within one RECHECK of its key being written)."""
        out: list[Plain] = []
        if self.status != "pending":
            return out
        if self.held:
            try:
                self._last_look(out)
            except _Failed as exc:
                self._fail(exc, 0)
                return out
            if self.status != "pending":
                return out  # (opened now; records held for a later epoch's key stay unread, as before)
        if self.client_random is None:
            why = "the connection ended before a ClientHello"
        elif self.server is None:
            why = "the connection ended before a ServerHello"
        else:
            label = self._label(self.held[0][0]) if self.held else "a key"
            why = f"the key log gave no {label} for client random {self._random()} ({self.keys.summary()})"
        self._fail(_Failed("no-key", why), 0)
        return out

    def _last_look(self, out: list[Plain]) -> None:
        """Read the growing key log now (not waiting for RECHECK) and open the held records it has keys for."""
        if self.keys.growing:
            self.keys.refresh(force=True)
            self._retry(out)

    def track_spans(self) -> None:
        for side in self.sides.values():
            side.spans = []

    def take_plain_spans(self, direction: Direction) -> list[tuple[int, int, int]]:
        """(plaintext offset, length, ciphertext offset) of each record's application data since the last
        call (the offsets count from the first byte of each kind fed, or handed out), with track_spans."""
        side = self.sides[direction]
        spans = side.spans or []
        if side.spans is not None:
            side.spans = []
        return spans

    def settled(self, direction: Direction) -> int:
        """Ciphertext bytes (from the first fed) whose records are complete and opened (or never will be)."""
        framer = self.sides[direction].framer
        held = [r.at for d, r, _, _ in self.held if d == direction]
        return min(held[0] - W.RECORD_HEADER if held else framer.base, framer.base)

    def _fail(self, exc: _Failed, frame: int) -> None:
        self.status, self.reason, self.auth_failed, self.failed_frame = exc.status, exc.reason, exc.auth, frame
        self.held.clear()
        for side in self.sides.values():
            side.framer.buf.clear()

    # ------------------------------------------------------------ records

    def _arrived(self, d: Direction, record: Record, frame: int, time: float, out: list[Plain]) -> None:
        side = self.sides[d]
        keyless = side.epoch != "plain" and side.protection is None
        if self.held or (keyless and record.type != W.ContentType.CHANGE_CIPHER_SPEC):
            if len(self.held) >= HOLD:  # (held records are at most MAX_CIPHERTEXT bytes each)
                self._last_look(out)  # (a fast peer fills the hold within one RECHECK of the key being written)
            if len(self.held) >= HOLD:
                waiting = self.held[0][0]
                raise _Failed("no-key", f"the key log gave no {self._label(waiting)} for client random "
                              f"{self._random()} within {HOLD} records ({self.keys.summary()})")
            self.held.append((d, record, frame, time))
            return
        self._record(d, record, frame, time, out)

    def _retry(self, out: list[Plain]) -> None:
        """Records held for a key: open those whose key is known now, in order."""
        while self.held:
            d, record, frame, time = self.held[0]
            side = self.sides[d]
            if side.protection is None and side.epoch != "plain" and not self._arm(d, wait=True):
                break
            self.held.popleft()
            self._record(d, record, frame, time, out)

    def _record(self, d: Direction, record: Record, frame: int, time: float, out: list[Plain]) -> None:
        side = self.sides[d]
        if record.type == W.ContentType.CHANGE_CIPHER_SPEC:
            if self.server is not None and self.server.version != W.TLS_1_3 and side.epoch == "plain":
                side.epoch = "application"  # TLS 1.2: protected from here on
                self._arm(d, wait=self.keys.growing)
            return  # TLS 1.3 middlebox compatibility: no meaning
        if side.epoch == "plain":
            if record.type == W.ContentType.HANDSHAKE:
                self._handshake(d, side.messages.feed(record.body), plain=True)
            elif record.type == W.ContentType.APPLICATION_DATA:
                raise _Failed("undecryptable", "protected records before the ServerHello (0-RTT early data is not "
                              f"decrypted; frame {frame})")
            return  # plaintext alerts
        self._protected(d, record, frame, time, out)

    def _protected(self, d: Direction, record: Record, frame: int, time: float, out: list[Plain]) -> None:
        side = self.sides[d]
        if side.protection is None:
            self._arm(d, wait=False)  # (records wait in _arrived while a growing log lacks the key)
        protection = side.protection
        assert protection is not None
        if protection.tls13 and record.type != W.ContentType.APPLICATION_DATA:
            return  # TLS 1.3 protects every record as application data: anything else is a plaintext alert
        try:
            kind, plain = protection.open(record)
        except AuthError as exc:
            if record.body == protection.last:
                # the same record again, byte for byte (GnuTLS under nbdkit resends its last one when a send
                # is retried as the connection closes): already decoded, and not the next in sequence
                self.repeated += 1
                return
            if protection.opened == 0 and self.status == "pending":
                raise _Failed("no-key", f"the key log's {protection.label} for client random {self._random()} "
                              "does not open this session's records (a key log of another run, or a wrong "
                              f"secret; frame {frame})") from None
            raise _Failed("undecryptable", f"{exc} at frame {frame}: damaged in the capture, or not the bytes the "
                          "peers exchanged", auth=True) from None
        if self.status == "pending":
            self.status = "decrypted"
        if kind == W.ContentType.APPLICATION_DATA and plain:
            explicit = 8 if not protection.tls13 and protection.suite.aead == "aes-gcm" else 0
            if side.spans is not None:
                side.spans.append((side.plain, len(plain), record.at + explicit))
            side.plain += len(plain)
            out.append((d, plain, frame, time))
        elif kind == W.ContentType.HANDSHAKE:
            self._handshake(d, side.messages.feed(plain), plain=False)

    # ------------------------------------------------------------ handshake

    def _handshake(self, d: Direction, messages: list[tuple[int, bytes]], *, plain: bool) -> None:
        side = self.sides[d]
        for kind, body in messages:
            if plain and kind == W.HandshakeType.CLIENT_HELLO and d == "c2s":
                if self.client_random is None:
                    self.client_random = _read(hello.client_random, body)
            elif plain and kind == W.HandshakeType.SERVER_HELLO and d == "s2c":
                self._server_hello(_read(hello.server_hello, body))
            elif kind == W.HandshakeType.FINISHED and side.epoch == "handshake":
                self._next_epoch(d, "application")
            elif kind == W.HandshakeType.KEY_UPDATE and side.epoch == "application" and self._tls13:
                assert self.suite is not None
                self._use(d, schedule.next_secret(self.suite, side.secret), f"{self._label(d)} (key update)")
            elif not plain and kind in (W.HandshakeType.CLIENT_HELLO, W.HandshakeType.SERVER_HELLO):
                raise _Failed("undecryptable", "TLS renegotiation is not followed")

    def _server_hello(self, sh: hello.ServerHello) -> None:
        if sh.retry:
            return  # a HelloRetryRequest: the next ClientHello keeps the random; the next ServerHello counts
        self.server = sh
        suite = W.SUITES.get(sh.suite)
        if suite is None or suite.tls13 != (sh.version == W.TLS_1_3):
            raise _Failed("undecryptable", f"cipher suite {sh.suite:#06x} under "
                          f"{W.VERSION_NAMES.get(sh.version, hex(sh.version))} is not one nbdscope decrypts "
                          "(TLS 1.3, or TLS 1.2 AES-GCM and ChaCha20-Poly1305)")
        if self.client_random is None:
            raise _Failed("no-key", "the ClientHello was not seen, so no key log line can be matched")
        self.suite = suite
        if self._tls13:
            for d in self.sides:
                self._next_epoch(d, "handshake")  # both sides: the server's next record, the client's next

    @property
    def _tls13(self) -> bool:
        return self.server is not None and self.server.version == W.TLS_1_3

    def _next_epoch(self, d: Direction, epoch: Literal["handshake", "application"]) -> None:
        side = self.sides[d]
        side.epoch, side.protection = epoch, None
        self._arm(d, wait=self.keys.growing)

    def _arm(self, d: Direction, *, wait: bool) -> bool:
        """Give a side the keys of its epoch; False when the log lacks them and the caller may wait."""
        side = self.sides[d]
        assert self.suite is not None and self.client_random is not None and self.server is not None
        label = self._label(d)
        secret = self.keys.secret(label, self.client_random)
        if secret is None:
            if wait:
                return False
            known = self.keys.knows(self.client_random)
            why = "lacks" if known else "has no line for this session's client random, so no"
            raise _Failed("no-key", f"the key log {why} {label} (client random {self._random()}; "
                          f"{self.keys.summary()})")
        if self._tls13:
            self._use(d, secret, label)
        else:
            client, server = schedule.tls12_keys(self.suite, secret, self.client_random, self.server.random)
            side.protection = Protection(self.suite, client if d == "c2s" else server, tls13=False, label=label)
        return True

    def _use(self, d: Direction, secret: bytes, label: str) -> None:
        assert self.suite is not None
        side = self.sides[d]
        side.secret = secret
        side.protection = Protection(self.suite, schedule.tls13_keys(self.suite, secret), tls13=True, label=label)

    def _label(self, d: Direction) -> str:
        if not self._tls13:
            return W.CLIENT_RANDOM
        side = self.sides[d]
        return _LABELS[(d, "application" if side.epoch == "application" else "handshake")]

    def _random(self) -> str:
        r = self.client_random
        return f"{r[:4].hex()}…{r[-2:].hex()}" if r else "(unknown)"


def _read(parse: Callable[[bytes], _T], body: bytes) -> _T:
    try:
        return parse(body)
    except hello.HelloError as exc:
        raise _Failed("undecryptable", str(exc)) from None
