"""TLS's own numbers that nbdscope needs to decrypt NBD sessions with a key log: record and handshake
types, the extensions read from the hellos, the AEAD cipher suites (IANA's registry), and the limits
RFC 8446 and RFC 5246 put on records. They are TLS's, not NBD's, but live here with every other
protocol constant so that no module spells a number of the wire itself."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


class HandshakeType(IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    FINISHED = 20
    KEY_UPDATE = 24


EXT_SUPPORTED_VERSIONS = 43  # RFC 8446 4.2.1: the ServerHello's selected version
TLS_1_2 = 0x0303
TLS_1_3 = 0x0304
VERSION_NAMES = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", TLS_1_2: "TLS 1.2", TLS_1_3: "TLS 1.3"}

RECORD_HEADER = 5  # type, legacy version, length
MAX_PLAINTEXT = 1 << 14  # RFC 8446 5.1 and RFC 5246 6.2.1
MAX_CIPHERTEXT = (1 << 14) + 256  # RFC 8446 5.2; nbdscope refuses longer records in TLS 1.2 too (AEAD adds 24)
HELLO_RANDOM = 32
# RFC 8446 4.1.3: a ServerHello whose random is SHA-256("HelloRetryRequest") is a HelloRetryRequest
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

# the key log's labels (NSS key log format, as GnuTLS, OpenSSL and Python's ssl write it)
CLIENT_RANDOM = "CLIENT_RANDOM"  # TLS 1.2: the master secret
CLIENT_HANDSHAKE = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_0 = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_0 = "SERVER_TRAFFIC_SECRET_0"

Aead = Literal["aes-gcm", "chacha20-poly1305"]


@dataclass(frozen=True, slots=True)
class Suite:
    code: int
    name: str
    aead: Aead
    key_len: int
    hash: Literal["sha256", "sha384"]
    tls13: bool


def _suites() -> dict[int, Suite]:
    table: list[tuple[int, str, Aead, int, str, bool]] = [
        (0x1301, "TLS_AES_128_GCM_SHA256", "aes-gcm", 16, "sha256", True),
        (0x1302, "TLS_AES_256_GCM_SHA384", "aes-gcm", 32, "sha384", True),
        (0x1303, "TLS_CHACHA20_POLY1305_SHA256", "chacha20-poly1305", 32, "sha256", True),
    ]
    # TLS 1.2 AEAD suites: AES-GCM (RFC 5288, 5487, 8442) and ChaCha20-Poly1305 (RFC 7905)
    for kx, aes128, aes256 in (("RSA", 0x009C, 0x009D), ("DHE_RSA", 0x009E, 0x009F), ("PSK", 0x00A8, 0x00A9),
                               ("DHE_PSK", 0x00AA, 0x00AB), ("RSA_PSK", 0x00AC, 0x00AD),
                               ("ECDHE_ECDSA", 0xC02B, 0xC02C), ("ECDHE_RSA", 0xC02F, 0xC030),
                               ("ECDHE_PSK", 0xD001, 0xD002)):
        table.append((aes128, f"TLS_{kx}_WITH_AES_128_GCM_SHA256", "aes-gcm", 16, "sha256", False))
        table.append((aes256, f"TLS_{kx}_WITH_AES_256_GCM_SHA384", "aes-gcm", 32, "sha384", False))
    for kx, code in (("ECDHE_RSA", 0xCCA8), ("ECDHE_ECDSA", 0xCCA9), ("DHE_RSA", 0xCCAA), ("PSK", 0xCCAB),
                     ("ECDHE_PSK", 0xCCAC), ("DHE_PSK", 0xCCAD), ("RSA_PSK", 0xCCAE)):
        table.append((code, f"TLS_{kx}_WITH_CHACHA20_POLY1305_SHA256", "chacha20-poly1305", 32, "sha256", False))
    return {code: Suite(code, name, aead, key_len, hash_, tls13)  # type: ignore[arg-type]
            for code, name, aead, key_len, hash_, tls13 in table}


SUITES: dict[int, Suite] = _suites()
