"""Forged TLS sessions for the decryption tests: the records a TLS 1.3 or 1.2 pair would send after
STARTTLS, encrypted with random secrets, and the key log line that names them.

Only the record layer is real (AEAD with the ``cryptography`` package; nonces and additional data
built here, apart from nbdscope's own); the handshake messages carry made-up bodies, since the
decryptor reads nothing of them but the hellos' randoms, suite and version and the message types.
The keys come from nbdscope's schedule, which the unit tests hold to RFC 8448's and the TLS 1.2 PRF's
published values, and the live tests to what GnuTLS and OpenSSL really do."""

from __future__ import annotations

import os
import struct

from nbdscope.spec.tlswire import SUITES, TLS_1_2, TLS_1_3
from nbdscope.tls import schedule
from nbdscope.tls.schedule import Keys, aead

Script = list[tuple[str, bytes]]


def handshake_message(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def record(kind: int, body: bytes, version: int = TLS_1_2) -> bytes:
    return struct.pack(">BHH", kind, version, len(body)) + body


class _Writer:
    """One direction's sending keys and sequence number."""

    def __init__(self, suite_code: int, keys: Keys, tls13: bool) -> None:
        self.suite, self.keys, self.tls13, self.seq = SUITES[suite_code], keys, tls13, 0

    def seal(self, kind: int, plain: bytes) -> bytes:
        cipher = aead(self.suite, self.keys.key)
        if self.tls13:
            inner = plain + bytes([kind])
            header = struct.pack(">BHH", 23, TLS_1_2, len(inner) + 16)
            nonce = bytes(a ^ b for a, b in zip(self.keys.iv, self.seq.to_bytes(12, "big"), strict=True))
            out = header + cipher.encrypt(nonce, inner, header)
        else:
            aad = struct.pack(">QBHH", self.seq, kind, TLS_1_2, len(plain))
            if self.suite.aead == "aes-gcm":
                explicit = self.seq.to_bytes(8, "big")
                body = explicit + cipher.encrypt(self.keys.iv + explicit, plain, aad)
            else:
                nonce = bytes(a ^ b for a, b in zip(self.keys.iv, self.seq.to_bytes(12, "big"), strict=True))
                body = cipher.encrypt(nonce, plain, aad)
            out = record(kind, body)
        self.seq += 1
        return out


class Forge:
    """A TLS session between an NBD client (c2s) and server (s2c) after STARTTLS was acknowledged."""

    def __init__(self, suite: int = 0x1301, *, client_random: bytes | None = None) -> None:
        self.code = suite
        self.suite = SUITES[suite]
        self.tls13 = self.suite.tls13
        self.client_random = client_random or os.urandom(32)
        self.server_random = os.urandom(32)
        size = 48 if self.suite.hash == "sha384" else 32
        self.secrets = {label: os.urandom(size) for label in (
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0")}
        self.master = os.urandom(48)
        self.app: dict[str, bytes] = {"c2s": self.secrets["CLIENT_TRAFFIC_SECRET_0"],
                                      "s2c": self.secrets["SERVER_TRAFFIC_SECRET_0"]}
        self.writers: dict[str, _Writer] = {}

    def keylog(self, labels: tuple[str, ...] | None = None) -> str:
        """The key log's lines for this session (``labels``: only these)."""
        hexr = self.client_random.hex()
        if not self.tls13:
            return f"CLIENT_RANDOM {hexr} {self.master.hex()}\n"
        return "".join(f"{label} {hexr} {secret.hex()}\n" for label, secret in self.secrets.items()
                       if labels is None or label in labels)

    def _use13(self, d: str, secret: bytes) -> None:
        self.writers[d] = _Writer(self.code, schedule.tls13_keys(self.suite, secret), True)

    def hellos(self) -> Script:
        """ClientHello, ServerHello and each side's first flight up to its Finished (the keys then switch)."""
        ch = handshake_message(1, struct.pack(">H", TLS_1_2) + self.client_random + b"\x00" + b"\x00\x02\x13\x01"
                               + b"\x01\x00" + b"\x00\x00")
        ext = struct.pack(">HHH", 43, 2, TLS_1_3) if self.tls13 else b""
        sh = handshake_message(2, struct.pack(">H", TLS_1_2) + self.server_random + b"\x00"
                               + struct.pack(">HB", self.code, 0) + struct.pack(">H", len(ext)) + ext)
        script: Script = [("c2s", record(22, ch, 0x0301)), ("s2c", record(22, sh))]
        finished = handshake_message(20, b"\x5a" * self.suite.key_len)  # (made-up bodies: fixed, so twins match)
        if self.tls13:
            self._use13("s2c", self.secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
            self._use13("c2s", self.secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
            s_flight = self.writers["s2c"].seal(22, handshake_message(8, b"\x00\x00") + finished)
            script += [("s2c", record(20, b"\x01") + s_flight)]
            c_flight = record(20, b"\x01") + self.writers["c2s"].seal(22, finished)
            script += [("c2s", c_flight)]
            self._use13("s2c", self.app["s2c"])
            self._use13("c2s", self.app["c2s"])
            script += [("s2c", self.writers["s2c"].seal(22, handshake_message(4, b"\xa5" * 40)))]  # a ticket
            return script
        client, server = schedule.tls12_keys(self.suite, self.master, self.client_random, self.server_random)
        self.writers = {"c2s": _Writer(self.code, client, False), "s2c": _Writer(self.code, server, False)}
        script += [("c2s", record(22, handshake_message(16, b"\x33" * 33)) + record(20, b"\x01")
                    + self.writers["c2s"].seal(22, finished)),
                   ("s2c", record(20, b"\x01") + self.writers["s2c"].seal(22, finished))]
        return script

    def data(self, d: str, plain: bytes) -> bytes:
        """Application data, in records of at most 2^14 bytes."""
        return b"".join(self.writers[d].seal(23, plain[i:i + (1 << 14)]) for i in range(0, len(plain), 1 << 14)) \
            if plain else b""

    def key_update(self, d: str) -> bytes:
        """A KeyUpdate from ``d``; its next records are under the next secret (TLS 1.3)."""
        out = self.writers[d].seal(22, handshake_message(24, b"\x00"))
        self.app[d] = schedule.next_secret(self.suite, self.app[d])
        self._use13(d, self.app[d])
        return out

    def alert(self, d: str) -> bytes:
        return self.writers[d].seal(21, b"\x01\x00")  # close_notify


def wrap(forge: Forge, plain: Script) -> Script:
    """The hellos, then every plaintext step of ``plain`` as application data of its direction."""
    return forge.hellos() + [(d, forge.data(d, data)) for d, data in plain]
