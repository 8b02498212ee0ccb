"""Key schedules: from a logged secret to the AEAD key and IV of one direction.

TLS 1.3 (RFC 8446 7.1-7.3): a traffic secret gives its key and IV by HKDF-Expand-Label, and the next
secret after a KeyUpdate by the label "traffic upd" (GnuTLS logs only the first application secrets,
so later ones are derived here). TLS 1.2 (RFC 5246 5, 6.3): the master secret and both randoms give
the key block by the PRF (P_hash over HMAC); AEAD suites take no MAC keys from it, and their implicit
IV is 4 bytes (GCM, RFC 5288) or 12 (ChaCha20-Poly1305, RFC 7905). Every primitive is the
``cryptography`` package's."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from nbdscope.spec.tlswire import Suite

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}


def _hash(suite: Suite) -> hashes.HashAlgorithm:
    return _HASHES[suite.hash]()


def expand_label(suite: Suite, secret: bytes, label: str, length: int, context: bytes = b"") -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1)."""
    full = b"tls13 " + label.encode("ascii")
    info = struct.pack(">HB", length, len(full)) + full + struct.pack(">B", len(context)) + context
    return HKDFExpand(algorithm=_hash(suite), length=length, info=info).derive(secret)


def next_secret(suite: Suite, secret: bytes) -> bytes:
    """The application traffic secret after a KeyUpdate (RFC 8446 7.2)."""
    return expand_label(suite, secret, "traffic upd", len(secret))


@dataclass(frozen=True, slots=True)
class Keys:
    """One direction's AEAD key and IV (TLS 1.2 GCM: the 4-byte implicit salt)."""

    key: bytes
    iv: bytes


def tls13_keys(suite: Suite, secret: bytes) -> Keys:
    return Keys(expand_label(suite, secret, "key", suite.key_len), expand_label(suite, secret, "iv", 12))


def prf(suite: Suite, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.2 PRF: P_hash(secret, label + seed) with the suite's hash (RFC 5246 5)."""
    seed = label + seed

    def mac(data: bytes) -> bytes:
        h = hmac.HMAC(secret, _hash(suite))
        h.update(data)
        return h.finalize()

    out, a = b"", seed
    while len(out) < length:
        a = mac(a)
        out += mac(a + seed)
    return out[:length]


def tls12_keys(suite: Suite, master: bytes, client_random: bytes, server_random: bytes) -> tuple[Keys, Keys]:
    """(client write keys, server write keys) from the key block."""
    iv_len = 4 if suite.aead == "aes-gcm" else 12
    block = prf(suite, master, b"key expansion", server_random + client_random, 2 * (suite.key_len + iv_len))
    k = suite.key_len
    return (Keys(block[:k], block[2 * k:2 * k + iv_len]), Keys(block[k:2 * k], block[2 * k + iv_len:]))


def aead(suite: Suite, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if suite.aead == "aes-gcm" else ChaCha20Poly1305(key)
