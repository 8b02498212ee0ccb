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
from collections.abc import Callable

import pytest

from nbdscope.proxy import tap
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.relay import Relay

SENT = 12 << 20  # per session; many times the ring
RING = 256 << 10


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


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_a_stalled_client_keeps_its_ring_space(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    ring = tap.Ring(size=RING)
    read_fd, write_fd = os.pipe()
    seen: dict[tuple[int, str], bytearray] = {}
    watcher = threading.Thread(target=_watch, args=(read_fd, ring, seen))
    watcher.start()

    async def main() -> tuple[bytes, bytes]:
        server = await asyncio.start_server(_server, "127.0.0.1", 0)
        up = server.sockets[0].getsockname()[1]
        relay = Relay(Address(host="127.0.0.1", port=0), Address(host="127.0.0.1", port=up), write_fd, ring,
                      log=lambda line: None)
        await relay.start()
        assert relay.server is not None
        front = relay.server.sockets[0].getsockname()[1]
        stalled = asyncio.ensure_future(_client(front, b"A", stall=1.0))
        await asyncio.sleep(0.2)  # A's bytes wait in the relay before B starts
        busy = await asyncio.wait_for(_client(front, b"B", stall=0.0), 60)
        held = await asyncio.wait_for(stalled, 60)
        await relay.stop()
        server.close()
        await server.wait_closed()
        return held, busy

    loop = new_loop()
    try:
        held, busy = loop.run_until_complete(main())
    finally:
        loop.close()
    os.close(write_fd)
    watcher.join(30)
    os.close(read_fd)
    assert held == _pattern(b"A")
    assert busy == _pattern(b"B")
    assert sorted(bytes(v) for (_, d), v in seen.items() if d == "s2c") == sorted([_pattern(b"A"), _pattern(b"B")])


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_client_bytes_before_the_upstream_answers_are_kept(new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """An upstream whose accept queue is full drops the relay's first SYN, which holds its
    connect back for a retransmission (about a second); the client has sent its bytes and
    half-closed by then: both must reach the server."""
    ring = tap.Ring(size=RING)
    read_fd, write_fd = os.pipe()
    seen: dict[tuple[int, str], bytearray] = {}
    watcher = threading.Thread(target=_watch, args=(read_fd, ring, seen))
    watcher.start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    up = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", up))  # the accept queue is now full

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        relay = Relay(Address(host="127.0.0.1", port=0), Address(host="127.0.0.1", port=up), write_fd, ring,
                      log=lambda line: None)
        await relay.start()
        assert relay.server is not None
        front = relay.server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", front))
        client.sendall(b"spoken first")
        client.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.3)  # the relay reads the client while its connect waits
        assert relay.stats.sessions == 0, "the upstream answered at once: nothing was tested"
        listener.setblocking(False)
        got = b""
        for _ in range(2):  # the filler, then the relay
            conn = await asyncio.wait_for(loop.sock_accept(listener), 10)
            upstream = conn[0]
        while chunk := await asyncio.wait_for(loop.sock_recv(upstream, 4096), 10):
            got += chunk
        upstream.close()
        client.close()
        await relay.stop()
        return got

    loop = new_loop()
    try:
        got = loop.run_until_complete(main())
    finally:
        loop.close()
        listener.close()
        filler.close()
    os.close(write_fd)
    watcher.join(30)
    os.close(read_fd)
    assert got == b"spoken first"
    assert bytes(seen.get((0, "c2s"), b"")) == b"spoken first"
