"""A small NBD server that breaks the spec on purpose, for what no real peer can
be made to do (e.g. the qemu 3.0 server: CAN_MULTI_CONN advertised on bit 8, no
SEND_CACHE, yet NBD_CMD_CACHE answered with success).

Loopback only, exits after --sessions connections or --timeout seconds.

    python3 tests/peers/nbd_misbehave.py --port 20050 --tflags 0x10d --cache-reply success
"""

from __future__ import annotations

import argparse
import asyncio
import struct

NBDMAGIC, IHAVEOPT = b"NBDMAGIC", b"IHAVEOPT"
REP_MAGIC, REQ_MAGIC, SIMPLE_MAGIC, STRUCT_MAGIC = 0x3E889045565A9, 0x25609513, 0x67446698, 0x668E33EF
OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO, OPT_STRUCTURED, OPT_SET_META = 1, 2, 6, 7, 8, 10
REP_ACK, REP_INFO, REP_META, REP_ERR_UNSUP = 1, 3, 4, (1 << 31) | 1
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_CACHE, CMD_BLOCK_STATUS = 0, 1, 2, 3, 5, 7
EINVAL = 22


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.disk = bytearray(args.size)
        self.sessions = 0
        self.done = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.sessions += 1
            if self.sessions >= self.a.sessions:
                self.done.set()

    async def session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        a = self.a
        w.write(NBDMAGIC + IHAVEOPT + struct.pack(">H", 3))
        (cflags,) = struct.unpack(">I", await r.readexactly(4))
        structured = False
        while True:
            magic, opt, length = struct.unpack(">8sII", await r.readexactly(16))
            payload = await r.readexactly(length)
            if magic != IHAVEOPT:
                return
            if opt == OPT_EXPORT_NAME:
                w.write(struct.pack(">QH", a.size, a.tflags) + (b"" if cflags & 2 else bytes(124)))
                break
            if opt == OPT_ABORT:
                w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_ACK, 0))
                return
            if opt == OPT_STRUCTURED and a.structured:
                structured = True
                w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_ACK, 0))
            elif opt == OPT_SET_META and structured:
                name = b"base:allocation"  # the only context this peer knows, id 1
                if name in _meta_queries(payload):
                    w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_META, 4 + len(name)) + struct.pack(">I", 1) + name)
                w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_ACK, 0))
            elif opt in (OPT_INFO, OPT_GO):
                info = struct.pack(">HQH", 0, a.size, a.tflags)
                w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_INFO, len(info)) + info)
                if a.min_block:
                    bs = struct.pack(">HIII", 3, a.min_block, max(4096, a.min_block), 1 << 25)
                    w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_INFO, len(bs)) + bs)
                w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_ACK, 0))
                if opt == OPT_GO:
                    break
            else:
                w.write(struct.pack(">QIII", REP_MAGIC, opt, REP_ERR_UNSUP, 0))
            await w.drain()
        await w.drain()
        await self.transmission(r, w, structured)

    async def transmission(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, structured: bool) -> None:
        a = self.a
        while True:
            magic, _flags, cmd, cookie, offset, length = struct.unpack(">IHHQQI", await r.readexactly(28))
            if magic != REQ_MAGIC:
                return
            if cmd == CMD_DISC:
                return
            if cmd == CMD_WRITE:
                data = await r.readexactly(length)
                if not a.drop_writes:
                    self.disk[offset:offset + len(data)] = data[: max(0, a.size - offset)]
                w.write(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie))
            elif cmd == CMD_READ:
                chunk = bytes(self.disk[offset:offset + length]).ljust(length, b"\0")
                if structured:
                    payload = struct.pack(">Q", offset) + chunk
                    w.write(struct.pack(">IHHQI", STRUCT_MAGIC, 1, 1, cookie, len(payload)) + payload)
                else:
                    w.write(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie) + chunk)
            elif cmd == CMD_FLUSH:
                w.write(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie))
            elif cmd == CMD_CACHE:
                error = 0 if a.cache_reply == "success" else EINVAL
                w.write(struct.pack(">IIQ", SIMPLE_MAGIC, error, cookie))
            elif cmd == CMD_BLOCK_STATUS and structured:
                ext = b"".join(struct.pack(">II", n, s) for n, s in a.extents)
                payload = struct.pack(">I", 1) + ext
                w.write(struct.pack(">IHHQI", STRUCT_MAGIC, 1, 5, cookie, len(payload)) + payload)
            else:
                w.write(struct.pack(">IIQ", SIMPLE_MAGIC, EINVAL, cookie))
            await w.drain()


def _meta_queries(payload: bytes) -> list[bytes]:
    """The context names asked for in a SET_META_CONTEXT payload (export name, then queries)."""
    try:
        (skip,) = struct.unpack_from(">I", payload)
        pos = 4 + skip
        (count,) = struct.unpack_from(">I", payload, pos)
        pos += 4
        names = []
        for _ in range(count):
            (n,) = struct.unpack_from(">I", payload, pos)
            names.append(payload[pos + 4:pos + 4 + n])
            pos += 4 + n
        return names
    except struct.error:
        return []


def _extents(text: str) -> list[tuple[int, int]]:
    return [(int(n), int(s)) for n, s in (part.split(":") for part in text.split(","))] if text else []


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--tflags", type=lambda s: int(s, 0), default=0x10D)
    p.add_argument("--min-block", type=int, default=0)
    p.add_argument("--structured", action="store_true")
    p.add_argument("--extents", type=_extents, default=[], help="LEN:STATUS,... for every BLOCK_STATUS")
    p.add_argument("--cache-reply", choices=("success", "einval"), default="success")
    p.add_argument("--drop-writes", action="store_true", help="acknowledge writes but keep the old data")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("loopback only")
    peer = Peer(args)
    server = await asyncio.start_server(peer.serve, args.host, args.port)
    print("listening", flush=True)
    try:
        await asyncio.wait_for(peer.done.wait(), args.timeout)
    except TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
