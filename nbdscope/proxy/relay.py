"""The transparent relay: every accepted client gets its own upstream connection,
bytes are forwarded first and recorded after, so a decoder problem can never stall
or alter the relay. What passes goes to the watcher process through a Tap (see
tap.py); decoding, rules and outputs happen there.

Built on asyncio buffered protocols rather than streams: a socket receives
straight into the tap's ring, the other socket sends from there as it arrives, and
back-pressure pauses reading from a side while the other side has bytes unsent (ends.py)."""

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

from nbdscope import vocab as it
from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.ends import OTHER, SocketEnd
from nbdscope.proxy.rewrite import FlagRewriter
from nbdscope.proxy.tap import Ring, Tap
from nbdscope.proxy.terminate import Termination, TlsTerminator
from nbdscope.spec import COMMANDS

MADE_UP_CLIENT, MADE_UP_SERVER = "192.0.2.1", "192.0.2.2"  # documentation range: not a real host
BACKLOG = 1024  # connections the kernel may complete before the relay accepts them (capped by somaxconn)


def _ipv4(host: object) -> str | None:
    try:
        return str(ipaddress.IPv4Address(host)) if isinstance(host, str) else None
    except ValueError:
        return None


def print_log(line: str, conn: int | None = None) -> None:
    """Where the relay's log goes when nothing else was given: stderr (the watcher names sessions better)."""
    print(f"proxy: connection {conn}: {line}" if conn is not None else f"proxy: {line}", file=sys.stderr, flush=True)


@dataclass
class RelayStats:
    sessions: int = 0
    open: int = 0
    upstream_failures: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})


class _Session:
    def __init__(self, relay: Relay, conn: int) -> None:
        self.relay, self.conn = relay, conn
        self.ends: dict[str, SocketEnd] = {}
        self.rewriter = relay.make_rewriter() if relay.make_rewriter else None
        self.closed_by: str | None = None
        self.reset = False  # the side that closed first reset the connection
        self.eofs: set[str] = set()
        self.finished = False
        self.started = False
        self.held: deque[tuple[float, bytes]] = deque()  # --delay: client bytes waiting, in order
        self.decoder = Connection() if relay.delays else None  # --delay must know which requests pass
        # --tls-terminate: follows the handshake to upgrade both sides after STARTTLS (proxy/terminate.py)
        self.terminator = TlsTerminator(self, relay.termination) if relay.termination is not None else None
        self.direct = self.rewriter is None and self.decoder is None and self.terminator is None  # bytes as received
        self.done = asyncio.get_running_loop().create_future()
        self.early: list[bytes] = []  # client bytes that arrived before the upstream connection

    def made(self, end: SocketEnd) -> None:
        self.ends[end.direction] = end
        if self.relay.throttled:
            end.hold("watcher", True)
        if end.direction == "c2s":  # the client: hold its bytes until the upstream is there
            self._record_open()
            end.hold("upstream", True)
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
                await loop.create_unix_connection(lambda: SocketEnd(self, "s2c"), relay.upstream.path)
            else:
                await loop.create_connection(lambda: SocketEnd(self, "s2c"), *relay.upstream.tcp())
        except OSError as exc:
            relay.stats.upstream_failures += 1
            why = exc.strerror or str(exc)
            relay.log(f"upstream {relay.upstream} refused the connection: {why}", self.conn)
            if not self.finished:
                relay.tap.action(self.conn, "s2c", time.time(), "upstream-failed",
                                 f"nbdscope proxy could not connect to the upstream {relay.upstream} ({why}) and "
                                 "closed the client's connection")
                self.closed_by = self.closed_by or "s2c"  # the proxy, standing for the server, hung up
            self._close_all()
            self._finish()
            return
        client = self.ends["c2s"]
        if client.transport is None or client.transport.is_closing() or self.finished:
            self._close_all()
            return
        client.hold("upstream", False)

    def _record_open(self) -> None:
        """Record the session the moment the client is accepted, before anything can go wrong
        with it (a reset, an upstream that refuses): every accepted connection is a session."""
        relay = self.relay
        client = self.ends["c2s"].transport
        assert client is not None
        self.started = True
        relay.stats.sessions += 1
        relay.stats.open += 1
        peer, made_up = relay.endpoints(self.conn, client)
        relay.tap.open(self.conn, time.time(), {"client": [peer[0].host, peer[0].port],
                                                "server": [peer[1].host, peer[1].port], "comment": made_up})

    def _start(self) -> None:
        """The upstream is connected: what the client sent meanwhile goes to it now."""
        early, self.early = self.early, []
        for data in early:
            self.forward("c2s", data)
        if "c2s" in self.eofs:
            self.eof("c2s")

    def _target(self, direction: str, data: bytes | memoryview) -> asyncio.Transport | None:
        """Where bytes received in ``direction`` go; None for client bytes that arrive before
        the upstream is connected, which are kept for it, not lost."""
        target = self.ends.get(OTHER[direction])
        if target is not None and target.transport is not None:
            return target.transport
        self.early.append(bytes(data))
        self.ends[direction].hold("upstream", True)
        return None

    def forward(self, direction: str, data: bytes) -> None:
        target = self._target(direction, data)
        if target is None:
            return
        relay = self.relay
        if self.terminator is not None:
            if self.terminator.holding(direction, data):
                return
            self.terminator.before(direction, data)
        if direction == "s2c" and self.rewriter is not None:
            before = len(self.rewriter.changes)
            data = self.rewriter.feed(data)
            for old, new, where in self.rewriter.changes[before:]:
                if old != new:  # one finding (proxy-action) says it; a log line too would say it twice
                    note = f"nbdscope proxy rewrote transmission flags {old:#06x} -> {new:#06x} in {where}"
                    relay.tap.action(self.conn, "s2c", time.time(), "rewrite-flags", note,
                                     {"sent": old, "forwarded": new})
        if not data:
            return
        if self.decoder is not None:
            self._forward_later(direction, data)
        else:
            target.write(data)  # forward first: everything after this only watches
            relay.stats.bytes[direction] += len(data)
            relay.tap.data(self.conn, direction, time.time(), data)  # type: ignore[arg-type]
        if self.terminator is not None:
            self.terminator.after()

    def forward_ring(self, direction: str, at: int, n: int) -> None:
        """Bytes received into the ring at ``at``: sent from there, then recorded."""
        relay = self.relay
        tap = relay.tap
        start = at % tap.ring.size
        view = tap.ring.data[start:start + n]
        target = self._target(direction, view)
        if target is None:
            return  # the ring space is not committed: it is simply reused
        target.write(view)
        if target.get_write_buffer_size():  # the transport may keep a view of the ring
            tap.pin(target, at)
        relay.stats.bytes[direction] += n
        tap.commit(self.conn, direction, time.time(), at, n)  # type: ignore[arg-type]

    def _forward_later(self, direction: str, data: bytes) -> None:
        """--delay: decode first, then hold client bytes as long as the slowest delayed request
        in them asks, never letting later bytes overtake earlier ones."""
        relay = self.relay
        assert self.decoder is not None
        try:
            events = self.decoder.feed(direction, data, frame=0, time=0.0)  # type: ignore[arg-type]
        except Exception:  # a decoder bug must not stall the relay: forward without delay
            events = []
        delayed = sorted({(COMMANDS.name(e.command), relay.delays[e.command]) for e in events
                          if isinstance(e, ev.Request) and e.command in relay.delays})
        if delayed:
            what = ", ".join(f"{name} ({seconds * 1000:g} ms)" for name, seconds in delayed)
            relay.tap.action(self.conn, direction, time.time(), "delay",  # type: ignore[arg-type]
                             f"{what} delayed by nbdscope proxy (--delay)")
        relay.stats.bytes[direction] += len(data)
        relay.tap.data(self.conn, direction, time.time(), data)  # type: ignore[arg-type]
        if direction == "s2c":
            target = self.ends["c2s"].transport
            assert target is not None
            target.write(data)
            return
        delay = max((relay.delays.get(e.command, 0.0) for e in events if isinstance(e, ev.Request)), default=0.0)
        loop = asyncio.get_running_loop()
        release = max(loop.time() + delay, self.held[-1][0] if self.held else 0.0)
        self.held.append((release, data))
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

    def eof(self, direction: str) -> None:
        self.closed_by = self.closed_by or direction
        self.eofs.add(direction)
        target = self.ends.get(OTHER[direction])
        if target is not None and target.transport is not None and target.transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                target.transport.write_eof()  # pass the half-close on
        if len(self.eofs) == 2:
            self._close_all()

    def lost(self, direction: str, reset: bool = False) -> None:
        if self.closed_by is None:
            self.closed_by, self.reset = direction, reset
        self._close_all()
        self._finish()

    def _close_all(self) -> None:
        for end in self.ends.values():
            if end.transport is not None and not end.transport.is_closing():
                end.transport.close()

    def abort(self) -> None:
        for end in self.ends.values():
            if end.transport is not None:
                end.transport.abort()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        relay = self.relay
        relay.sessions.discard(self)
        if self.early:  # the client left before the upstream was there: those bytes never passed
            kept = sum(map(len, self.early))
            relay.tap.note(self.conn, "c2s", time.time(), f"nbdscope proxy: {kept} bytes from the client were not "
                           "forwarded (the client left before the upstream connection was made)")
            self.early = []
        if self.started:
            relay.stats.open -= 1
            relay.tap.close(self.conn, self.closed_by or "c2s", time.time(), self.reset)  # type: ignore[arg-type]
        if not self.done.done():
            self.done.set_result(None)


class Relay:
    def __init__(self, listen: Address, upstream: Address, tap_fd: int, ring: Ring, *,
                 rewriter: Callable[[], FlagRewriter] | None = None, grace: float = 5.0,
                 delays: dict[int, float] | None = None, termination: Termination | None = None,
                 log: Callable[..., None] = print_log) -> None:
        self.listen, self.upstream = listen, upstream
        self.termination = termination  # --tls-terminate
        self.delays = delays or {}  # command -> seconds to hold such requests before forwarding
        self.tap_fd, self.ring = tap_fd, ring
        self.tap: Tap  # made in start(): it needs the running loop
        self.throttled = False
        self.make_rewriter = rewriter
        self.grace = grace
        self.log = log  # (line) or (line, connection) for a line about one connection
        self.stats = RelayStats()
        self.sessions: set[_Session] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.next_conn = 0

    def _new_client(self) -> SocketEnd:
        session = _Session(self, self.next_conn)
        self.next_conn += 1
        self.sessions.add(session)
        return SocketEnd(session, "c2s")

    def _throttle(self, on: bool) -> None:
        """The watcher is behind: stop reading every socket until it catches up (nothing is dropped)."""
        self.throttled = on
        for session in self.sessions:
            for end in session.ends.values():
                end.hold("watcher", on)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tap = Tap(self.tap_fd, self.ring, self._throttle)
        if self.listen.is_unix:
            assert self.listen.path is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen.path)
            self.server = await loop.create_unix_server(self._new_client, self.listen.path, backlog=BACKLOG)
        else:
            self.server = await loop.create_server(self._new_client, *self.listen.tcp(), backlog=BACKLOG)

    def track(self, future: asyncio.Future[Any]) -> None:
        self.tasks.add(future)
        future.add_done_callback(self.tasks.discard)

    async def stop(self, now: asyncio.Event | None = None) -> None:
        """Stop accepting, let open sessions finish for the grace period, then close them; once
        ``now`` is set (a second Ctrl-C, or the terminal UI quitting), close them without waiting more."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        now = now or asyncio.Event()
        if not now.is_set():
            self._say_open()
        forced = await self._wait_sessions(now)
        if self.sessions:
            why = (f"without waiting out the {self.grace:g} s grace period: asked to stop at once (a second Ctrl-C, "
                   "or the terminal UI quitting)" if forced else f"after the {self.grace:g} s grace period (--grace)")
            late = [s.done for s in self.sessions]
            for session in list(self.sessions):
                if session.started and not session.finished:
                    self.tap.action(session.conn, "c2s", time.time(), "closed-at-shutdown",
                                    f"nbdscope proxy closed this session at shutdown, {why}")
                session.abort()
            await asyncio.wait(late, timeout=self.grace)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.grace)
        if self.listen.is_unix and self.listen.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen.path)
        s = self.stats
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        self.tap.end({"sessions": s.sessions, "bytes": s.bytes, "upstream_failures": s.upstream_failures,
                      "left_open": len(self.sessions), "left_tasks": len(others)}, time.time())
        await self.tap.drain(self.grace)

    def _open_sessions(self) -> int:
        return sum(1 for s in self.sessions if s.started and not s.finished)

    def _say_open(self) -> None:
        """At the first stop request: why the proxy does not end at once, and how to make it."""
        n = self._open_sessions()
        if n and self.grace > 0:
            them = "it" if n == 1 else "them"
            self.log(f"stopping: {n} session{'' if n == 1 else 's'} open; {them} get{'s' if n == 1 else ''} "
                     f"{self.grace:g} s to finish (--grace); Ctrl-C again closes {them} now")

    async def _wait_sessions(self, now: asyncio.Event) -> bool:
        """Wait until every session has ended, the grace period is over or ``now`` is set; True for the last."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        forced = asyncio.ensure_future(now.wait())
        try:
            while not now.is_set():
                pending = [s.done for s in self.sessions if not s.done.done()]
                left = deadline - loop.time()
                if not pending or left <= 0:
                    break
                await asyncio.wait([*pending, forced], timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()  # and gone before the leftover tasks are counted
            with contextlib.suppress(asyncio.CancelledError):
                await forced
        return now.is_set()

    def endpoints(self, conn: int, transport: asyncio.Transport) -> tuple[tuple[it.Endpoint, it.Endpoint],
                                                                           str | None]:
        """Endpoints for the decoder and the pcapng: real IPv4 ones where they exist, made-up
        documentation addresses (and a comment saying what they stand for) otherwise."""
        try:
            peer = transport.get_extra_info("peername")
        except OSError:  # a client reset before it was accepted may have no address left
            peer = None
        host = _ipv4(peer[0]) if isinstance(peer, tuple) else None
        up = _ipv4(self.upstream.host) if not self.upstream.is_unix else None
        if host and up:
            return (it.Endpoint(host, int(peer[1])), it.Endpoint(up, int(self.upstream.port or 0))), None
        client = it.Endpoint(MADE_UP_CLIENT, 40000 + conn % 20000)
        server = it.Endpoint(MADE_UP_SERVER, int(self.upstream.port or 10809))
        comment = (f"nbdscope proxy: made-up addresses; client {peer or 'address unknown (it reset at once)'}, "
                   f"listening on {self.listen}, upstream {self.upstream}")
        return (client, server), comment

