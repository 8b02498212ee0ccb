"""TLS records: cutting one direction's bytes into records, and opening a protected record with the
keys of its epoch.

The framer holds at most one record (``MAX_CIPHERTEXT`` bytes and its header): a longer length field
is refused before anything is allocated for it. Opening follows RFC 8446 5.2-5.3 (TLS 1.3: the header
is the additional data, the nonce the IV xor the sequence number, the content type inside after the
padding) and RFC 5288 / RFC 7905 (TLS 1.2: sequence number, type, version and plaintext length as
additional data; GCM carries 8 bytes of explicit nonce)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from nbdscope.spec.tlswire import MAX_CIPHERTEXT, MAX_PLAINTEXT, RECORD_HEADER, ContentType, Suite
from nbdscope.tls.schedule import Keys, aead

_TAG = 16
_EXPLICIT = 8  # TLS 1.2 GCM's explicit nonce
_TYPES = frozenset(int(t) for t in ContentType)


class RecordError(ValueError):
    """Bytes that are no TLS record, or a record longer than TLS allows."""


class AuthError(ValueError):
    """A record whose authentication tag does not match: wrong key, or damaged bytes."""


@dataclass(frozen=True, slots=True)
class Record:
    type: int
    version: int
    body: bytes
    at: int = 0  # ciphertext offset of the body in its direction (from the first byte fed)


class Framer:
    """One direction's bytes in, whole records out."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.base = 0  # offset of buf[0] in the direction's bytes

    def feed(self, data: bytes | memoryview) -> list[Record]:
        self.buf += data
        out: list[Record] = []
        buf, p = self.buf, 0
        while len(buf) - p >= RECORD_HEADER:
            kind, version, length = struct.unpack_from(">BHH", buf, p)
            if kind not in _TYPES or version >> 8 != 3:
                raise RecordError(f"bytes {bytes(buf[p:p + 3]).hex(' ')} do not begin a TLS record")
            if length > MAX_CIPHERTEXT:
                raise RecordError(f"a TLS record of {length} bytes, longer than TLS allows ({MAX_CIPHERTEXT})")
            if len(buf) - p < RECORD_HEADER + length:
                break
            out.append(Record(kind, version, bytes(buf[p + RECORD_HEADER:p + RECORD_HEADER + length]),
                              self.base + p + RECORD_HEADER))
            p += RECORD_HEADER + length
        del buf[:p]
        self.base += p
        return out


class Protection:
    """The keys of one direction's current epoch and its record sequence number."""

    def __init__(self, suite: Suite, keys: Keys, *, tls13: bool, label: str) -> None:
        self.suite, self.keys, self.tls13, self.label = suite, keys, tls13, label
        self.cipher = aead(suite, keys.key)
        self.seq = 0
        self.opened = 0  # records this key opened: a first failure means the key is wrong
        self.last = b""  # the body of the last record opened (a record sent twice is recognised by it)

    def _nonce(self) -> bytes:
        iv = self.keys.iv
        padded = self.seq.to_bytes(len(iv), "big")
        return bytes(a ^ b for a, b in zip(iv, padded, strict=True))

    def open(self, record: Record) -> tuple[int, bytes]:
        """(inner content type, plaintext); AuthError when the tag does not match."""
        body = record.body
        try:
            if self.tls13:
                if len(body) < _TAG + 1:
                    raise RecordError("a TLS record shorter than its authentication tag")
                aad = struct.pack(">BHH", record.type, record.version, len(body))
                inner = self.cipher.decrypt(self._nonce(), body, aad).rstrip(b"\0")
                if not inner:
                    raise RecordError("a TLS 1.3 record with no content type")
                kind, plain = inner[-1], inner[:-1]
            else:
                if len(body) < _TAG + (_EXPLICIT if self.suite.aead == "aes-gcm" else 0):
                    raise RecordError("a TLS record shorter than its nonce and authentication tag")
                if self.suite.aead == "aes-gcm":
                    nonce, body = self.keys.iv + body[:_EXPLICIT], body[_EXPLICIT:]
                else:
                    nonce = self._nonce()
                size = len(body) - _TAG
                aad = struct.pack(">QBHH", self.seq, record.type, record.version, size)
                kind, plain = record.type, self.cipher.decrypt(nonce, body, aad)
        except InvalidTag:
            raise AuthError(f"record {self.seq} under {self.label} failed authentication") from None
        if len(plain) > MAX_PLAINTEXT:
            raise RecordError(f"a TLS record of {len(plain)} plaintext bytes, more than TLS allows")
        self.seq += 1
        self.opened += 1
        self.last = record.body
        return kind, plain
