"""Handshake messages as far as decryption needs them: their boundaries across records (to see a
Finished or a KeyUpdate go by), the client random of a ClientHello and what a ServerHello chose.

Only the hellos' bodies are held (at most ``HELLO_KEEP`` bytes); every other message, certificates
included, is passed over by its length."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nbdscope.spec.tlswire import EXT_SUPPORTED_VERSIONS, HELLO_RANDOM, HELLO_RETRY_RANDOM, TLS_1_3, HandshakeType

HELLO_KEEP = 1 << 16  # a hello longer than this is not held (its random is read from its first bytes)
_KEPT = frozenset({HandshakeType.CLIENT_HELLO, HandshakeType.SERVER_HELLO})


class HelloError(ValueError):
    """A hello that cannot be read (cut short, or lengths that do not add up)."""


class Messages:
    """One direction's handshake messages, fed the payloads of its handshake records in order."""

    def __init__(self) -> None:
        self._head = b""  # the 4-byte message header being gathered
        self._type = 0
        self._left = 0  # body bytes of the current message still to come
        self._body = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages that ended in ``data``: (type, body), the body empty unless it is a hello."""
        done: list[tuple[int, bytes]] = []
        i, n = 0, len(data)
        while i < n:
            if self._left == 0 and len(self._head) < 4:
                take = min(4 - len(self._head), n - i)
                self._head += data[i:i + take]
                i += take
                if len(self._head) < 4:
                    break
                self._type = self._head[0]
                self._left = int.from_bytes(self._head[1:4], "big")
                self._body = bytearray()
                if self._left == 0:
                    done.append((self._type, b""))
                    self._head = b""
                continue
            take = min(self._left, n - i)
            if self._type in _KEPT and len(self._body) < HELLO_KEEP:
                self._body += data[i:i + min(take, HELLO_KEEP - len(self._body))]
            self._left -= take
            i += take
            if self._left == 0:
                done.append((self._type, bytes(self._body)))
                self._head, self._body = b"", bytearray()
        return done

    @property
    def between(self) -> bool:
        """No message is half-read (a key change must fall on a message boundary)."""
        return self._left == 0 and not self._head


def client_random(body: bytes) -> bytes:
    if len(body) < 2 + HELLO_RANDOM:
        raise HelloError("ClientHello cut short before its random")
    return body[2:2 + HELLO_RANDOM]


@dataclass(frozen=True, slots=True)
class ServerHello:
    random: bytes
    suite: int
    version: int  # the version chosen: supported_versions when present, else legacy_version
    retry: bool  # a HelloRetryRequest: another ClientHello and ServerHello follow


def server_hello(body: bytes) -> ServerHello:
    try:
        legacy, = struct.unpack_from(">H", body, 0)
        random = body[2:2 + HELLO_RANDOM]
        p = 2 + HELLO_RANDOM
        p += 1 + body[p]  # legacy session id
        suite, = struct.unpack_from(">H", body, p)
        p += 3  # suite, compression method
        version = legacy
        if p + 2 <= len(body):
            ext_len, = struct.unpack_from(">H", body, p)
            p, end = p + 2, min(len(body), p + 2 + ext_len)
            while p + 4 <= end:
                kind, size = struct.unpack_from(">HH", body, p)
                if kind == EXT_SUPPORTED_VERSIONS and size == 2:
                    version, = struct.unpack_from(">H", body, p + 4)
                p += 4 + size
    except (struct.error, IndexError):
        raise HelloError("ServerHello cut short") from None
    if len(random) != HELLO_RANDOM:
        raise HelloError("ServerHello cut short before its random")
    return ServerHello(random, suite, version, retry=version == TLS_1_3 and random == HELLO_RETRY_RANDOM)
