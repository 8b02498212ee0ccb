"""``proxy --tls-terminate CERT KEY``: the proxy as TLS server to the client and TLS client to the upstream.

For clients that cannot write a key log. The handshake is followed in plaintext (a decoder of its own);
the client's NBD_OPT_STARTTLS and the server's acknowledgement are forwarded as they are, then both sockets
are paused and upgraded (``loop.start_tls``): the client's TLS ends at the proxy, which opens its own TLS
session to the upstream. What passes between the two is plaintext, relayed, recorded and decoded; the tap
says so first with a note of action "tls-plaintext", which makes the decoder take the bytes after the
acknowledgement as plaintext (decoder/decrypted.py).

Not byte-exact: the client and the upstream each see a different TLS session (other keys, other records,
the proxy's certificate instead of the server's). X.509 only: Python 3.11's ``ssl`` has no TLS-PSK, so a
PSK client cannot be served this way (use --tls-keylog with the client's key log instead)."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.spec import Opt

if TYPE_CHECKING:
    from nbdscope.proxy.relay import _Session

PENDING_LIMIT = 4 << 20  # plaintext held while the second TLS handshake completes


@dataclass
class Termination:
    """The two TLS contexts (made before the relay forks) and the name the upstream's certificate must carry."""

    server: ssl.SSLContext  # towards the client: the proxy's certificate
    client: ssl.SSLContext  # towards the upstream
    hostname: str | None


def contexts(cert: str, key: str, ca: str | None, insecure: bool, upstream_host: str | None) -> Termination:
    """ssl.SSLError / OSError (a bad file) propagate; the caller makes them one line."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    elif ca is not None:
        client.load_verify_locations(ca)
    else:
        client.load_default_certs()
    return Termination(server, client, upstream_host)


class TlsTerminator:
    """One session's watch for STARTTLS, and its upgrade."""

    def __init__(self, session: _Session, termination: Termination) -> None:
        self.session, self.termination = session, termination
        self.watch = Connection()
        self.state = "plain"  # then "acked" (the acknowledgement is being forwarded), "starting", "tls"
        self.noted = False
        # plaintext that one side's finished TLS handshake delivered while the other's was still going on
        self.pending: list[tuple[str, bytes]] = []
        self.pending_bytes = 0

    def holding(self, direction: str, data: bytes) -> bool:
        """Whether bytes must wait for both upgrades (then they are kept, in order)."""
        if self.state != "starting":
            return False
        self.pending.append((direction, bytes(data)))
        self.pending_bytes += len(data)
        if self.pending_bytes > PENDING_LIMIT:  # a peer that talks on and on while the other side's handshake hangs
            self.session.abort()
        return True

    def before(self, direction: str, data: bytes) -> None:
        """Bytes about to be forwarded, while the handshake is in plaintext."""
        if self.state != "plain":
            return
        try:
            events = self.watch.feed(direction, data, frame=0, time=0.0)  # type: ignore[arg-type]
        except Exception:  # a decoder bug must not stall the relay: no termination then
            self.state = "off"
            return
        for e in events:
            if isinstance(e, ev.OptionRequest) and e.option == Opt.STARTTLS and not self.noted:
                self.noted = True  # said before the option is recorded, so before its acknowledgement
                if self.session.decoder is not None:  # --delay's own decoder follows the plaintext too
                    self.session.decoder.terminate_tls()
                self.session.relay.tap.action(self.session.conn, "c2s", time.time(), "tls-plaintext",
                                              "nbdscope proxy terminates TLS (--tls-terminate): the bytes after "
                                              "STARTTLS are the plaintext it relays, re-encrypted on each side")
            elif isinstance(e, ev.TlsStart):
                self.state = "acked"

    def after(self) -> None:
        """Bytes were forwarded: once the acknowledgement went to the client, upgrade both sides."""
        if self.state != "acked":
            return
        self.state = "starting"
        for end in self.session.ends.values():
            end.hold("tls", True)  # nothing more is read as plaintext
        self.session.relay.track(asyncio.ensure_future(self._upgrade()))

    async def _upgrade(self) -> None:
        session, t = self.session, self.termination
        loop = asyncio.get_running_loop()
        client, upstream = session.ends["c2s"], session.ends["s2c"]
        assert client.transport is not None and upstream.transport is not None
        try:
            to_client, to_upstream = await asyncio.gather(
                loop.start_tls(client.transport, client, t.server, server_side=True),
                loop.start_tls(upstream.transport, upstream, t.client, server_hostname=t.hostname))
        except (OSError, ssl.SSLError, ConnectionError, RuntimeError) as exc:
            session.relay.log(f"TLS termination failed: {exc}", session.conn)
            session.relay.tap.note(session.conn, "s2c", time.time(), f"nbdscope proxy: TLS termination failed "
                                   f"({exc}); the session was closed")
            session.abort()
            return
        if to_client is None or to_upstream is None:
            session.abort()
            return
        client.transport, upstream.transport = to_client, to_upstream
        self.state = "tls"
        pending, self.pending = self.pending, []
        for direction, data in pending:
            session.forward(direction, data)
        for end in (client, upstream):
            end.hold("tls", False)
