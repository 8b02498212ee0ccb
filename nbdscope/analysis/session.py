"""What one NBD connection negotiated and did, built from decoder events only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nbdscope.analysis.outcome import HandshakeLog, Outcome
from nbdscope.analysis.stats import CommandStats
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, TRANSMISSION_FLAGS, Cmd, Info, Opt
from nbdscope.vocab import Endpoint

_TRAFFIC = frozenset((ev.Request, ev.SimpleReply, ev.ReplyChunk, ev.PayloadData))
_DISC = int(Cmd.DISC)
_GO, _BLOCK_SIZE = int(Opt.GO), int(Info.BLOCK_SIZE)
_OPTION_EVENTS = (ev.OptionRequest, ev.OptionReply)
RECENT = 256  # completed cookies remembered per session, to tell a second reply from an invented cookie


@dataclass(slots=True)
class Flight:
    """A request awaiting (the rest of) its reply, as the analysis sees it."""

    request: ev.Request
    chunks: int = 0  # reply messages that arrived so far
    ambiguous: bool = False  # its cookie was reused while in flight: which reply answers which is unknown


@dataclass
class Session:
    id: str
    client: Endpoint
    server: Endpoint
    source: str
    first_frame: int
    saw_start: bool
    last_frame: int = 0
    last_source: str = ""  # in a run over several files, the one holding last_frame (set when the run ends)
    # several files: last_frame as it stood when the next file began (last_frame is the greatest frame number
    # seen, and numbers restart with each file, so the engine sets it to 0 there and takes this back if the
    # session shows nothing more)
    earlier_last_frame: int = 0
    start_time: float = 0.0
    last_time: float = 0.0
    handshake: str = "unknown"
    tls: bool = False
    tls_bytes: int = 0
    export_name: str | None = None
    description: str | None = None  # NBD_INFO_DESCRIPTION
    size: int | None = None
    # What the client received; ``server_flags`` is what the server sent (they differ only when the
    # proxy rewrote them). Judge the client on this one and the server on ``server_flags``.
    transmission_flags: int | None = None
    min_block: int | None = None
    preferred_block: int | None = None
    max_payload: int | None = None
    # whether the client's last NBD_OPT_GO listed NBD_INFO_BLOCK_SIZE (only then is it bound by the sizes it gets);
    # None: no GO seen (NBD_OPT_EXPORT_NAME, oldstyle, or a capture that began later)
    block_size_requested: bool | None = None
    structured_replies: bool | None = None
    extended_headers: bool | None = None
    meta_contexts: dict[int, str] = field(default_factory=dict)
    transmission: bool = False
    commands: dict[int, CommandStats] = field(default_factory=dict)  # kept by the Statistics addon
    messages: int = 0
    disconnect: str = "open"  # soft (NBD_CMD_DISC), abort (NBD_OPT_ABORT), hard, open (the capture ended first)
    closed: bool = False
    closed_by: str | None = None  # direction that closed first, when the capture shows it
    handshake_log: HandshakeLog = field(default_factory=HandshakeLog)
    outcome: Outcome | None = None  # set when the connection ended before transmission
    disc_frame: int | None = None  # the client's NBD_CMD_DISC
    disc_pending: frozenset[int] = frozenset()  # cookies in flight when it was sent
    # The first MUST-level finding blamed on each side ("client"/"server"): (frame, check). The spec lets
    # the other side hard-disconnect after it, and what a side does after its peer broke the protocol
    # is judged with that in mind.
    faults: dict[str, tuple[int, str]] = field(default_factory=dict)
    lost_framing: dict[str, int] = field(default_factory=dict)  # direction -> gaps that took framing with them
    # The proxy's own doing: (action, frame, text) in order; flag rewrites as (sent, forwarded)
    proxy_actions: list[tuple[str, int, str]] = field(default_factory=list)
    flag_rewrites: list[tuple[int, int]] = field(default_factory=list)
    proxy_closed: bool = False  # the proxy ended the connection itself (at shutdown, or its upstream failed)
    anomaly_count: int = 0
    lost_sync: int = 0  # gaps and resyncs: replies to unseen requests are then expected
    withheld: int = 0  # findings about a peer dropped because the capture had lost framing (rules/base.py)
    # The requests in flight and the recently completed cookies (cookie -> command, -1 for a reply that
    # matched no request), as of the event being dispatched: the engine updates both once every addon has
    # seen the event, so a rule reads the state before it. The decoder keeps its own table for framing,
    # which runs ahead (it decodes a whole chunk of bytes before any of its events is dispatched).
    in_flight: dict[int, Flight] = field(default_factory=dict)
    recent: dict[int, int] = field(default_factory=dict)
    shadowed: dict[int, list[Flight]] = field(default_factory=dict)  # earlier requests a cookie reuse hid
    # cookie -> what to call with the reply that completes it (the engine calls and drops them), so a
    # rule that judges a reply only in a few cases need not hear every reply
    followups: dict[int, list[Callable[[Session, ev.Reply], None]]] = field(default_factory=dict)

    def observe(self, e: ev.Event) -> None:
        """Fold one decoder event into the summary."""
        self.last_frame = max(self.last_frame, e.frame)
        self.last_time = e.time
        self.messages += 1
        if type(e) in _TRAFFIC:
            return  # requests and replies: counted by the Statistics addon, tracked in flight by the decoder
        if isinstance(e, ev.ServerGreeting):
            self.handshake = e.style
            if e.style == "oldstyle":
                self.size, self.transmission_flags = e.size, e.transmission_flags
        elif isinstance(e, _OPTION_EVENTS):
            self._option(e)
        elif isinstance(e, ev.TransmissionStart):
            self._started(e)
        elif isinstance(e, ev.Gap) and e.resync:
            self.lost_framing[e.dir] = self.lost_framing.get(e.dir, 0) + 1
            self.lost_sync += 1
        elif isinstance(e, ev.Resync):
            self.lost_sync += 1
        elif isinstance(e, ev.TlsStart):
            self.tls = True
        elif isinstance(e, ev.TlsData):
            self.tls_bytes += e.nbytes
        elif isinstance(e, ev.ConnectionEnd):
            self._ended(e)

    def _option(self, e: ev.OptionRequest | ev.OptionReply) -> None:
        self.handshake_log.observe(e)
        if type(e) is ev.OptionRequest and e.option == _GO:
            self.block_size_requested = _BLOCK_SIZE in e.info_requests
        elif type(e) is ev.OptionReply and e.info_type is not None and not self.transmission:
            self._learn(e)

    def _started(self, e: ev.TransmissionStart) -> None:
        self.transmission = True
        if e.how != "mid-stream":
            self.export_name = e.export_name
            self.size, self.transmission_flags = e.size, e.transmission_flags
            self.min_block, self.preferred_block, self.max_payload = e.min_block, e.preferred_block, e.max_payload
            self.meta_contexts = dict(e.meta_contexts)
        self.structured_replies, self.extended_headers = e.structured_replies, e.extended_headers

    def _learn(self, e: ev.OptionReply) -> None:
        """Export facts from NBD_REP_INFO, kept even when the session never reaches transmission."""
        if e.info_type == Info.EXPORT:
            self.size, self.transmission_flags = e.size, e.transmission_flags
        elif e.info_type == Info.NAME:
            self.export_name = e.name
        elif e.info_type == Info.DESCRIPTION:
            self.description = e.description
        elif e.info_type == Info.BLOCK_SIZE:
            self.min_block, self.preferred_block, self.max_payload = e.min_block, e.preferred_block, e.max_payload
        if self.export_name is None and e.info_type != Info.NAME:
            self.export_name = self.handshake_log.asked.get(e.option)

    def _ended(self, e: ev.ConnectionEnd) -> None:
        self.closed = True
        self.closed_by = e.by
        if e.soft:
            self.disconnect = "soft"
        elif not self.transmission and self.handshake_log.aborted:
            self.disconnect = "abort"
        elif e.how != "end-of-capture":
            self.disconnect = "hard"
        if not self.transmission:
            self.outcome = self.handshake_log.outcome(e, self.tls, lost=bool(self.lost_sync), proxy=self.proxy_closed)

    def noted(self, blame: str, severity: str, frame: int, check: str) -> None:
        """A finding was reported about this session (the rule base calls this)."""
        self.anomaly_count += 1
        if severity == "error" and blame not in self.faults:
            self.faults[blame] = (frame, check)

    def proxy_action(self, action: str, frame: int, text: str, values: dict[str, int]) -> None:
        """Something the proxy did to this connection on purpose (engine: from the source's notes)."""
        self.proxy_actions.append((action, frame, text))
        if action == "rewrite-flags":
            self.flag_rewrites.append((values["sent"], values["forwarded"]))
        elif action in ("closed-at-shutdown", "upstream-failed"):
            self.proxy_closed = True

    def sent_flags(self, received: int | None) -> int | None:
        """The transmission flags the server sent where the client received ``received``."""
        for sent, forwarded in reversed(self.flag_rewrites):
            if forwarded == received:
                return sent
        return received

    @property
    def server_flags(self) -> int | None:
        """The transmission flags as the server sent them (judge the server on these)."""
        return self.sent_flags(self.transmission_flags) if self.flag_rewrites else self.transmission_flags

    def server_has_flag(self, mask: int) -> bool:
        """Like ``has_flag``, on the flags the server sent."""
        flags = self.server_flags
        return bool(flags is not None and flags & int(mask))

    def track(self, e: ev.Event) -> None:
        """Update the requests in flight for a request or reply that every addon has seen."""
        cls = type(e)
        if cls is ev.Request:
            if e.command != _DISC:  # type: ignore[attr-defined]
                hidden = self.in_flight.get(e.cookie)  # type: ignore[attr-defined]
                if hidden is not None:  # reused while in flight, as the decoder's table keeps it
                    hidden.ambiguous = True
                    self.shadowed.setdefault(e.cookie, []).append(hidden)  # type: ignore[attr-defined]
                self.in_flight[e.cookie] = Flight(e, ambiguous=hidden is not None)  # type: ignore[arg-type, attr-defined]
            elif self.disc_frame is None:
                self.disc_frame, self.disc_pending = e.frame, frozenset(self.in_flight)
            return
        cookie = e.cookie  # type: ignore[attr-defined]
        if e.completes:  # type: ignore[attr-defined]
            self.in_flight.pop(cookie, None)
            if self.shadowed:
                hidden_flights = self.shadowed.get(cookie)
                if hidden_flights:
                    self.in_flight[cookie] = hidden_flights.pop()
                    if not hidden_flights:
                        del self.shadowed[cookie]
            recent = self.recent
            recent.pop(cookie, None)
            recent[cookie] = e.command if e.command is not None else -1  # type: ignore[attr-defined]
            if len(recent) > RECENT:
                del recent[next(iter(recent))]
        else:
            flight = self.in_flight.get(cookie)
            if flight is not None:
                flight.chunks += 1

    def await_reply(self, cookie: int, hook: Callable[[Session, ev.Reply], None]) -> None:
        """Have ``hook`` called with the reply that completes the request of this cookie."""
        self.followups.setdefault(cookie, []).append(hook)

    @property
    def reliable(self) -> bool:
        """True when the capture saw the whole connection so far without losing framing."""
        return self.saw_start and not self.lost_sync

    def has_flag(self, mask: int) -> bool:
        """Whether the client was told this transmission flag (see ``server_has_flag`` for the server)."""
        # int() first: '&' with an IntFlag on the right goes through the slow enum machinery
        return bool(self.transmission_flags is not None and self.transmission_flags & int(mask))

    def as_json(self) -> dict[str, object]:
        tflags = self.transmission_flags
        return {
            "id": self.id,
            "input": self.source,
            "client": str(self.client),
            "server": str(self.server),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            **({"last_input": self.last_source} if self.last_source else {}),
            "handshake": self.handshake,
            "tls": self.tls,
            "export": {
                "name": self.export_name,
                "size": self.size,
                "transmission_flags": tflags,
                "flags": TRANSMISSION_FLAGS.names(tflags) if tflags is not None else None,
                "min_block": self.min_block,
                "preferred_block": self.preferred_block,
                "max_payload": self.max_payload,
                "description": self.description,
                "server_transmission_flags": self.server_flags if self.flag_rewrites else None,
            },
            "structured_replies": self.structured_replies,
            "extended_headers": self.extended_headers,
            "meta_contexts": {str(k): v for k, v in sorted(self.meta_contexts.items())},
            "commands": {COMMANDS.name(cmd): s.as_json() for cmd, s in sorted(self.commands.items())},
            "messages": self.messages,
            "tls_bytes": self.tls_bytes,
            "disconnect": self.disconnect,
            "outcome": self.outcome.as_json() if self.outcome is not None else None,
            "proxy_actions": [{"action": a, "frame": f, "text": t} for a, f, t in self.proxy_actions],
        }
