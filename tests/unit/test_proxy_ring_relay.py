"""The relay receives into the tap's ring and sends from there. A socket that cannot
take its bytes yet may keep pointing into the ring (uvloop keeps a view of what it
could not send), so that space must not be handed out again until it is sent: here a
stalled client holds ring space while a second session pushes many ring-fulls
through, and both must still receive exactly what the server sent."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from nbdscope.proxy import tap
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.relay import Relay

SENT = 12 << 20  # per session; many times the ring
RING = 256 << 10
T = TypeVar("T")


def _pattern(who: bytes) -> bytes:
    return random.Random(who).randbytes(SENT)


async def _server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    who = await reader.readexactly(1)
    writer.write(_pattern(who))
    await writer.drain()
    writer.close()


async def _client(port: int, who: bytes, stall: float) -> bytes:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: the relay must buffer
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, who)
    await asyncio.sleep(stall)
    got = bytearray()
    while len(got) < SENT:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        got += chunk
    sock.close()
    return bytes(got)


def _watch(fd: int, ring: tap.Ring, out: dict[tuple[int, str], bytearray]) -> None:
    for kind, direction, conn, _time, payload in tap.read_records(fd, ring, lambda: None, 0.05):
        if kind == tap.DATA:
            out.setdefault((conn, direction), bytearray()).extend(payload)


def _loops() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    loops: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:
        return loops
    return [*loops, uvloop.new_event_loop]


def _relayed(new_loop: Callable[[], asyncio.AbstractEventLoop], upstream: int,
             clients: Callable[[Relay, int], Awaitable[T]]) -> tuple[T, dict[tuple[int, str], bytearray]]:
    """Runs a relay in front of ``upstream`` on a new loop of the given kind, with a small
    ring and a watcher thread; ``clients(relay, front_port)`` drives it. Returns what the
    clients returned and the bytes the watcher saw per (connection, direction)."""
    ring = tap.Ring(size=RING)
    read_fd, write_fd = os.pipe()
    seen: dict[tuple[int, str], bytearray] = {}
    watcher = threading.Thread(target=_watch, args=(read_fd, ring, seen))
    watcher.start()

    async def main() -> T:
        relay = Relay(Address(host="127.0.0.1", port=0), Address(host="127.0.0.1", port=upstream), write_fd, ring,
                      log=lambda line: None)
        await relay.start()
        assert relay.server is not None
        try:
            return await clients(relay, relay.server.sockets[0].getsockname()[1])
        finally:
            await relay.stop()

    loop = new_loop()
    try:
        result = loop.run_until_complete(main())
    finally:
        loop.close()
        os.close(write_fd)
        watcher.join(30)
        os.close(read_fd)
    return result, seen


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_a_stalled_client_keeps_its_ring_space(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    server_loop = asyncio.new_event_loop()  # the server runs in a thread of its own, whatever the relay's loop
    server = server_loop.run_until_complete(asyncio.start_server(_server, "127.0.0.1", 0))
    serving = threading.Thread(target=server_loop.run_forever)
    serving.start()

    async def clients(relay: Relay, front: int) -> tuple[bytes, bytes]:
        stalled = asyncio.ensure_future(_client(front, b"A", stall=1.0))
        await asyncio.sleep(0.2)  # A's bytes wait in the relay before B starts
        busy = await asyncio.wait_for(_client(front, b"B", stall=0.0), 60)
        return await asyncio.wait_for(stalled, 60), busy

    try:
        (held, busy), seen = _relayed(new_loop, server.sockets[0].getsockname()[1], clients)
    finally:
        server_loop.call_soon_threadsafe(server_loop.stop)
        serving.join(30)
        server.close()
        server_loop.run_until_complete(server.wait_closed())
        server_loop.close()
    assert held == _pattern(b"A")
    assert busy == _pattern(b"B")
    assert sorted(bytes(v) for (_, d), v in seen.items() if d == "s2c") == sorted([_pattern(b"A"), _pattern(b"B")])


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_client_bytes_before_the_upstream_answers_are_kept(new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """An upstream whose accept queue is full drops the relay's first SYN, which holds its
    connect back for a retransmission (about a second); the client has sent its bytes and
    half-closed by then: both must reach the server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())  # the accept queue is now full

    async def clients(relay: Relay, front: int) -> bytes:
        loop = asyncio.get_running_loop()
        client = socket.create_connection(("127.0.0.1", front))
        client.sendall(b"spoken first")
        client.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.3)  # the relay reads the client while its connect waits
        assert relay.stats.bytes["c2s"] == 0, "the upstream answered at once: nothing was tested"
        listener.setblocking(False)
        for _ in range(2):  # the filler, then the relay
            upstream, _ = await asyncio.wait_for(loop.sock_accept(listener), 10)
        got = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(upstream, 4096), 10):
            got += chunk
        upstream.close()
        client.close()
        return got

    try:
        got, seen = _relayed(new_loop, listener.getsockname()[1], clients)
    finally:
        listener.close()
        filler.close()
    assert got == b"spoken first"
    assert bytes(seen.get((0, "c2s"), b"")) == b"spoken first"
