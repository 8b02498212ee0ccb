"""The transparent relay: every accepted client gets its own upstream connection,
bytes are forwarded first and decoded after, so a decoder problem can never stall
or alter the relay. What passes is fed, as stream items, to the same engine that
analyses captures, and written as a pcapng whose frame numbers are the ones the
live findings use.

Built on asyncio protocols rather than streams: data goes from one transport to
the other as it arrives, with no intermediate buffer, and back-pressure pauses
reading from a side while the other side's write buffer is full."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbdscope.analysis.engine import Engine
from nbdscope.capture import items as it
from nbdscope.decoder import events as ev
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.rewrite import FlagRewriter
from nbdscope.report.pcapng import MAX_SEGMENT, PcapngWriter
from nbdscope.spec import COMMANDS

MADE_UP_CLIENT, MADE_UP_SERVER = "192.0.2.1", "192.0.2.2"  # documentation range: not a real host
OTHER = {"c2s": "s2c", "s2c": "c2s"}


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


class _End(asyncio.Protocol):
    """One socket of a session; ``direction`` is the direction of the bytes it receives."""

    def __init__(self, session: _Session, direction: str) -> None:
        self.session, self.direction = session, direction
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.session.made(self)

    def data_received(self, data: bytes) -> None:
        self.session.forward(self.direction, data)

    def eof_received(self) -> bool:
        self.session.eof(self.direction)
        return True  # keep the socket open: the other direction may still be talking

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.lost(self.direction)

    def pause_writing(self) -> None:  # our outgoing buffer is full: stop reading the other side
        peer = self.session.ends.get(OTHER[self.direction])
        if peer is not None and peer.transport is not None:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.session.ends.get(OTHER[self.direction])
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.resume_reading()


class _Session:
    def __init__(self, relay: Relay, conn: int) -> None:
        self.relay, self.conn = relay, conn
        self.ends: dict[str, _End] = {}
        self.rewriter = relay.make_rewriter() if relay.make_rewriter else None
        self.closed_by: str | None = None
        self.eofs: set[str] = set()
        self.finished = False
        self.started = False
        self.offsets = {"c2s": 0, "s2c": 0}
        self.held: deque[tuple[float, bytes]] = deque()  # --delay: client bytes waiting, in order
        self.done = asyncio.get_running_loop().create_future()

    def made(self, end: _End) -> None:
        self.ends[end.direction] = end
        if end.direction == "c2s":  # the client: hold its bytes until the upstream is there
            assert end.transport is not None
            end.transport.pause_reading()
            self.relay.track(asyncio.ensure_future(self._connect()))
        elif self.finished or self.ends["c2s"].transport is None or self.ends["c2s"].transport.is_closing():
            assert end.transport is not None
            end.transport.close()  # the client left while we were connecting
        else:
            self._start()  # before the server's first bytes can arrive

    async def _connect(self) -> None:
        relay, loop = self.relay, asyncio.get_running_loop()
        try:
            if relay.upstream.is_unix:
                await loop.create_unix_connection(lambda: _End(self, "s2c"), relay.upstream.path)
            else:
                await loop.create_connection(lambda: _End(self, "s2c"), relay.upstream.host, relay.upstream.port)
        except OSError as exc:
            relay.stats.upstream_failures += 1
            relay.log(f"proxy: upstream {relay.upstream} refused session {self.conn}: {exc.strerror or exc}")
            self._close_all()
            self._finish(record=False)
            return
        client = self.ends["c2s"].transport
        if client is None or client.is_closing() or self.finished:
            self._close_all()
            return
        client.resume_reading()

    def _start(self) -> None:
        relay = self.relay
        client = self.ends["c2s"].transport
        assert client is not None
        self.started = True
        relay.stats.sessions += 1
        relay.stats.open += 1
        peer, made_up = relay.endpoints(self.conn, client)
        now = time.time()
        frame = relay.pcap.open(self.conn, peer[0], peer[1], now, made_up)
        relay.observe(it.StreamOpen(self.conn, peer[0], peer[1], frame, now, True, "proxy"))

    def forward(self, direction: str, data: bytes) -> None:
        relay = self.relay
        changes: list[tuple[int, int]] = []
        if direction == "s2c" and self.rewriter is not None:
            before = len(self.rewriter.changes)
            data = self.rewriter.feed(data)
            changes = self.rewriter.changes[before:]
        target = self.ends.get(OTHER[direction])
        if not data or target is None or target.transport is None:
            return
        if direction == "c2s" and relay.delays:
            self._forward_later(data, changes)
            return
        target.transport.write(data)  # forward first: everything after this only watches
        relay.stats.bytes[direction] += len(data)
        try:
            self._watch(direction, data, changes)
        except Exception as exc:  # never let watching break relaying
            relay.stats.decoder_errors += 1
            relay.log(f"proxy: session {self.conn}: recording failed ({type(exc).__name__}: {exc})")

    def _forward_later(self, data: bytes, changes: list[tuple[int, int]]) -> None:
        """--delay: decode first, then hold the bytes as long as the slowest delayed request
        in them asks, never letting later bytes overtake earlier ones."""
        relay = self.relay
        events = self._watch("c2s", data, changes, note="delayed by nbdscope proxy")
        delay = max((relay.delays.get(e.command, 0.0) for e in events if isinstance(e, ev.Request)), default=0.0)
        loop = asyncio.get_running_loop()
        release = max(loop.time() + delay, self.held[-1][0] if self.held else 0.0)
        self.held.append((release, data))
        relay.stats.bytes["c2s"] += len(data)
        if len(self.held) == 1:
            loop.call_at(release, self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        target = self.ends.get("s2c")
        while self.held and self.held[0][0] <= loop.time():
            _, data = self.held.popleft()
            if target is not None and target.transport is not None and not target.transport.is_closing():
                target.transport.write(data)
        if self.held:
            loop.call_at(self.held[0][0], self._release)

    def _watch(self, direction: str, data: bytes, changes: list[tuple[int, int]],
               note: str | None = None) -> list[ev.Event]:
        relay = self.relay
        comment = "; ".join(f"nbdscope proxy rewrote transmission flags {old:#06x} -> {new:#06x}"
                            for old, new in changes if old != new) or None
        if comment:
            relay.log(f"proxy: session {self.conn}: {comment}")
        now = time.time()
        base = relay.pcap.frames
        events: list[ev.Event] = []
        # decoded segment by segment, with the frame numbers the pcapng will give them
        for j, at in enumerate(range(0, len(data), MAX_SEGMENT)):
            events += relay.observe(it.StreamData(self.conn, direction, data[at:at + MAX_SEGMENT],  # type: ignore[arg-type]
                                                  base + j + 1, now))
        start = self.offsets[direction]
        self.offsets[direction] = start + len(data)
        if note and any(isinstance(e, ev.Request) and e.command in relay.delays for e in events):
            names = sorted({COMMANDS.name(e.command) for e in events if isinstance(e, ev.Request)
                            and e.command in relay.delays})
            comment = "; ".join(filter(None, (comment, f"{', '.join(names)} {note}")))
        relay.pcap.data(self.conn, direction, relay.redacted(self.conn, direction, data, start), now,  # type: ignore[arg-type]
                        comment)
        return events

    def eof(self, direction: str) -> None:
        self.closed_by = self.closed_by or direction
        self.eofs.add(direction)
        target = self.ends.get(OTHER[direction])
        if target is not None and target.transport is not None and target.transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                target.transport.write_eof()  # pass the half-close on
        if len(self.eofs) == 2:
            self._close_all()

    def lost(self, direction: str) -> None:
        self.closed_by = self.closed_by or direction
        self._close_all()
        self._finish(record=self.started)

    def _close_all(self) -> None:
        for end in self.ends.values():
            if end.transport is not None and not end.transport.is_closing():
                end.transport.close()

    def abort(self) -> None:
        for end in self.ends.values():
            if end.transport is not None:
                end.transport.abort()

    def _finish(self, record: bool) -> None:
        if self.finished:
            return
        self.finished = True
        relay = self.relay
        relay.sessions.discard(self)
        if record:
            relay.stats.open -= 1
            now = time.time()
            by = self.closed_by or "c2s"
            frame = relay.pcap.frames + 2  # the second FIN closes the connection in a capture too
            relay.observe(it.StreamClose(self.conn, "fin", frame, now, by))  # type: ignore[arg-type]
            relay.pcap.close(self.conn, by, now)  # type: ignore[arg-type]
        if not self.done.done():
            self.done.set_result(None)


class Relay:
    def __init__(self, listen: Address, upstream: Address, engine: Engine, pcap: PcapngWriter, *,
                 rewriter: Callable[[], FlagRewriter] | None = None, grace: float = 5.0, redact: bool = False,
                 delays: dict[int, float] | None = None,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> None:
        self.listen, self.upstream = listen, upstream
        self.delays = delays or {}  # command -> seconds to hold such requests before forwarding
        self.engine, self.pcap = engine, pcap
        self.make_rewriter = rewriter
        self.grace = grace
        self.redact = redact
        self.log = log
        self.stats = RelayStats()
        self.sessions: set[_Session] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.next_conn = 0

    def _new_client(self) -> _End:
        session = _Session(self, self.next_conn)
        self.next_conn += 1
        self.sessions.add(session)
        return _End(session, "c2s")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.listen.is_unix:
            assert self.listen.path is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen.path)
            self.server = await loop.create_unix_server(self._new_client, self.listen.path)
        else:
            self.server = await loop.create_server(self._new_client, self.listen.host, self.listen.port)

    def track(self, future: asyncio.Future[Any]) -> None:
        self.tasks.add(future)
        future.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        """Stop accepting, let open sessions finish for the grace period, then close them."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        pending = [s.done for s in self.sessions]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.grace)
            for session in list(self.sessions):
                session.abort()
            if late:
                await asyncio.wait(late, timeout=self.grace)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.grace)
        if self.listen.is_unix and self.listen.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen.path)

    def endpoints(self, conn: int, transport: asyncio.Transport) -> tuple[tuple[it.Endpoint, it.Endpoint],
                                                                           str | None]:
        """Endpoints for the decoder and the pcapng: real IPv4 ones where they exist, made-up
        documentation addresses (and a comment saying what they stand for) otherwise."""
        peer = transport.get_extra_info("peername")
        host = _ipv4(peer[0]) if isinstance(peer, tuple) else None
        up = _ipv4(self.upstream.host) if not self.upstream.is_unix else None
        if host and up:
            return (it.Endpoint(host, int(peer[1])), it.Endpoint(up, int(self.upstream.port or 0))), None
        client = it.Endpoint(MADE_UP_CLIENT, 40000 + conn % 20000)
        server = it.Endpoint(MADE_UP_SERVER, int(self.upstream.port or 10809))
        comment = (f"nbdscope proxy: made-up addresses; client {peer or self.listen}, "
                   f"listening on {self.listen}, upstream {self.upstream}")
        return (client, server), comment

    def redacted(self, conn: int, direction: str, data: bytes, start: int) -> bytes:
        """The chunk with read and write data zeroed (headers and lengths kept), if asked."""
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

    def observe(self, item: it.StreamItem) -> list[ev.Event]:
        try:
            return self.engine.feed(item)
        except Exception as exc:  # the relay must outlive any bug in what watches it
            self.stats.decoder_errors += 1
            if self.stats.decoder_errors <= 3:
                self.log(f"proxy: decoding error ignored ({type(exc).__name__}: {exc}); bytes still relayed")
            return []
