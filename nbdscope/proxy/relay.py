"""The transparent relay: every accepted client gets its own upstream connection,
bytes are forwarded first and decoded after, so a decoder problem can never stall
or alter the relay. What passes is fed, as stream items, to the same engine that
analyses captures, and written as a pcapng whose frame numbers are the ones the
live findings use."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nbdscope.analysis.engine import Engine
from nbdscope.capture import items as it
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.rewrite import FlagRewriter
from nbdscope.report.pcapng import MAX_SEGMENT, PcapngWriter

CHUNK = 1 << 18
MADE_UP_CLIENT, MADE_UP_SERVER = "192.0.2.1", "192.0.2.2"  # documentation range: not a real host


def _ipv4(host: object) -> str | None:
    try:
        return str(ipaddress.IPv4Address(host)) if isinstance(host, str) else None
    except ValueError:
        return None


@dataclass
class RelayStats:
    sessions: int = 0
    open: int = 0
    upstream_failures: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    decoder_errors: int = 0


class Relay:
    def __init__(self, listen: Address, upstream: Address, engine: Engine, pcap: PcapngWriter, *,
                 rewriter: Callable[[], FlagRewriter] | None = None, grace: float = 5.0, redact: bool = False,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> None:
        self.listen, self.upstream = listen, upstream
        self.engine, self.pcap = engine, pcap
        self.make_rewriter = rewriter
        self.grace = grace
        self.redact = redact
        self.offsets: dict[tuple[int, str], int] = {}  # stream offset per session and direction
        self.log = log
        self.stats = RelayStats()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.next_conn = 0

    async def start(self) -> None:
        if self.listen.is_unix:
            assert self.listen.path is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen.path)
            self.server = await asyncio.start_unix_server(self.handle, self.listen.path, limit=CHUNK)
        else:
            self.server = await asyncio.start_server(self.handle, self.listen.host, self.listen.port, limit=CHUNK)

    async def stop(self) -> None:
        """Stop accepting, let open sessions finish for the grace period, then close them."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=self.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.grace)
        if self.listen.is_unix and self.listen.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen.path)

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream.is_unix:
            assert self.upstream.path is not None
            return await asyncio.open_unix_connection(self.upstream.path, limit=CHUNK)
        return await asyncio.open_connection(self.upstream.host, self.upstream.port, limit=CHUNK)

    def _endpoints(self, conn: int, writer: asyncio.StreamWriter) -> tuple[it.Endpoint, it.Endpoint, str | None]:
        """Endpoints for the decoder and the pcapng: real IPv4 ones where they exist, made-up
        documentation addresses (and a comment saying what they stand for) otherwise."""
        peer = writer.get_extra_info("peername")
        host = _ipv4(peer[0]) if isinstance(peer, tuple) else None
        up = _ipv4(self.upstream.host) if not self.upstream.is_unix else None
        if host and up:
            return it.Endpoint(host, int(peer[1])), it.Endpoint(up, int(self.upstream.port or 0)), None
        client = it.Endpoint(MADE_UP_CLIENT, 40000 + conn % 20000)
        server = it.Endpoint(MADE_UP_SERVER, int(self.upstream.port or 10809))
        comment = (f"nbdscope proxy: made-up addresses; client {peer or self.listen}, "
                   f"listening on {self.listen}, upstream {self.upstream}")
        return client, server, comment

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client: asyncio runs this as its own task for every accepted connection."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        try:
            await self._session(reader, writer)
        except asyncio.CancelledError:
            writer.close()
            raise

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.next_conn
        self.next_conn += 1
        try:
            up_reader, up_writer = await self._connect_upstream()
        except OSError as exc:
            self.stats.upstream_failures += 1
            self.log(f"proxy: upstream {self.upstream} refused session {conn}: {exc.strerror or exc}")
            writer.close()
            return
        self.stats.sessions += 1
        self.stats.open += 1
        client, server, comment = self._endpoints(conn, writer)
        now = time.time()
        frame = self.pcap.open(conn, client, server, now, comment)
        self._observe(it.StreamOpen(conn, client, server, frame, now, True, "proxy"))
        rewriter = self.make_rewriter() if self.make_rewriter else None
        closed_by: list[str] = []
        c2s = asyncio.create_task(self._pump(conn, "c2s", reader, up_writer, None, closed_by))
        s2c = asyncio.create_task(self._pump(conn, "s2c", up_reader, writer, rewriter, closed_by))
        try:
            await asyncio.gather(c2s, s2c)
        finally:
            for t in (c2s, s2c):
                t.cancel()
            for w in (writer, up_writer):
                w.close()
            self.stats.open -= 1
            now = time.time()
            by = closed_by[0] if closed_by else "c2s"
            frame = self.pcap.frames + 2  # the second FIN closes the connection in a capture too
            self._observe(it.StreamClose(conn, "fin", frame, now, by))  # type: ignore[arg-type]
            self.pcap.close(conn, by, now)  # type: ignore[arg-type]
            self.offsets.pop((conn, "c2s"), None)
            self.offsets.pop((conn, "s2c"), None)

    async def _pump(self, conn: int, direction: str, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    rewriter: FlagRewriter | None, closed_by: list[str]) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                if rewriter is not None:
                    before = len(rewriter.changes)
                    data = rewriter.feed(data)
                    changes = rewriter.changes[before:]
                else:
                    changes = []
                if data:
                    dst.write(data)  # forward first: what follows only watches
                    self.stats.bytes[direction] += len(data)
                    comment = "; ".join(f"nbdscope proxy rewrote transmission flags {old:#06x} -> {new:#06x}"
                                        for old, new in changes if old != new) or None
                    if comment:
                        self.log(f"proxy: session {conn}: {comment}")
                    now = time.time()
                    # decoded segment by segment, with the frame numbers the pcapng will give them
                    for j, at in enumerate(range(0, len(data), MAX_SEGMENT)):
                        self._observe(it.StreamData(conn, direction, data[at:at + MAX_SEGMENT],  # type: ignore[arg-type]
                                                    self.pcap.frames + j + 1, now))
                    self.pcap.data(conn, direction, self._redacted(conn, direction, data), now,  # type: ignore[arg-type]
                                   comment)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not closed_by:
                closed_by.append(direction)
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()  # pass the half-close on

    def _redacted(self, conn: int, direction: str, data: bytes) -> bytes:
        """The chunk with read and write data zeroed (headers and lengths kept), if asked."""
        start = self.offsets.get((conn, direction), 0)
        self.offsets[(conn, direction)] = start + len(data)
        if not self.redact:
            return data
        decoder = self.engine.connection(conn)
        if decoder is None:
            return data
        out = bytearray(data)
        for lo, hi in decoder.take_payload_ranges(direction):  # type: ignore[arg-type]
            a, b = max(lo, start) - start, min(hi, start + len(data)) - start
            if a < b:
                out[a:b] = bytes(b - a)
        return bytes(out)

    def _observe(self, item: it.StreamItem) -> None:
        try:
            self.engine.feed(item)
        except Exception as exc:  # the relay must outlive any bug in what watches it
            self.stats.decoder_errors += 1
            if self.stats.decoder_errors <= 3:
                self.log(f"proxy: decoding error ignored ({type(exc).__name__}: {exc}); bytes still relayed")
