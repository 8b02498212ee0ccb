"""Independent encoder of NBD messages for tests.

Numbers here are typed from the spec (doc/proto.md) on purpose instead of
imported from nbdscope.spec, so the tests check the product's tables rather
than agreeing with them by construction.
"""

from __future__ import annotations

import socket
import struct

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
CLISERV = 0x00420281861253
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
EREQ_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF
EXT_MAGIC = 0x6E8A278C


def greeting_newstyle(hflags: int = 0b11) -> bytes:
    return NBDMAGIC + IHAVEOPT + struct.pack(">H", hflags)


def greeting_oldstyle(size: int, flags: int) -> bytes:
    return NBDMAGIC + struct.pack(">QQI", CLISERV, size, flags) + bytes(124)


def client_flags(flags: int = 0b11) -> bytes:
    return struct.pack(">I", flags)


def option(opt: int, data: bytes = b"") -> bytes:
    return IHAVEOPT + struct.pack(">II", opt, len(data)) + data


def opt_go_data(name: str = "", infos: tuple[int, ...] = ()) -> bytes:
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def opt_meta_data(name: str, queries: list[str]) -> bytes:
    n = name.encode()
    out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q.encode()
    return out


def opt_reply(opt: int, rep: int, data: bytes = b"") -> bytes:
    return struct.pack(">QIII", REP_MAGIC, opt, rep, len(data)) + data


def info_export(size: int, tflags: int) -> bytes:
    return struct.pack(">HQH", 0, size, tflags)


def info_block_size(mn: int, pref: int, mx: int) -> bytes:
    return struct.pack(">HIII", 3, mn, pref, mx)


def meta_context(ctx_id: int, name: str) -> bytes:
    return struct.pack(">I", ctx_id) + name.encode()


def request(cmd: int, cookie: int, offset: int, length: int, flags: int = 0, data: bytes = b"") -> bytes:
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie, offset, length) + data


def ext_request(cmd: int, cookie: int, offset: int, length: int, flags: int = 0, data: bytes = b"") -> bytes:
    return struct.pack(">IHHQQQ", EREQ_MAGIC, flags, cmd, cookie, offset, length) + data


def simple_reply(cookie: int, error: int = 0, data: bytes = b"") -> bytes:
    return struct.pack(">IIQ", SIMPLE_MAGIC, error, cookie) + data


def chunk(cookie: int, rtype: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">IHHQI", STRUCT_MAGIC, flags, rtype, cookie, len(payload)) + payload


def ext_chunk(cookie: int, rtype: int, offset: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">IHHQQQ", EXT_MAGIC, flags, rtype, cookie, offset, len(payload)) + payload


def extents(ctx: int, ext: list[tuple[int, int]]) -> bytes:
    return struct.pack(">I", ctx) + b"".join(struct.pack(">II", n, s) for n, s in ext)


def extents_ext(ctx: int, ext: list[tuple[int, int]]) -> bytes:
    return struct.pack(">II", ctx, len(ext)) + b"".join(struct.pack(">QQ", n, s) for n, s in ext)


def error_payload(err: int, msg: str, offset: int | None = None) -> bytes:
    out = struct.pack(">IH", err, len(msg)) + msg.encode()
    return out + (struct.pack(">Q", offset) if offset is not None else b"")


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from a peer (a plain or TLS socket), failing the test if it closes first."""
    out = b""
    while len(out) < n:
        part = sock.recv(n - len(out))
        assert part, f"connection closed after {len(out)} of {n} bytes"
        out += part
    return out
