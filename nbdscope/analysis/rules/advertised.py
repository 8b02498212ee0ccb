"""Rules about using what the server did not advertise, and the seeds' flag
confusion (spec "Transmission flags", "Command flags", "Request types")."""

from __future__ import annotations

from collections import defaultdict

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMAND_FLAGS, COMMANDS, Cmd, CommandFlag, TransmissionFlag

TF = TransmissionFlag
WRITES = {Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.RESIZE}
_NEEDS = {Cmd.FLUSH: TF.SEND_FLUSH, Cmd.TRIM: TF.SEND_TRIM, Cmd.WRITE_ZEROES: TF.SEND_WRITE_ZEROES,
          Cmd.RESIZE: TF.SEND_RESIZE}
# plain ints: `value & IntFlag` builds an enum value each time, too slow per message
_FUA, _DF, _FAST_ZERO, _PAYLOAD_LEN = (int(f) for f in (CommandFlag.FUA, CommandFlag.DF, CommandFlag.FAST_ZERO,
                                                     CommandFlag.PAYLOAD_LEN))
# the commands each command flag is documented for ("Command flags")
_VALID_FOR = {int(flag): valid for flag, valid in (
    (CommandFlag.NO_HOLE, {Cmd.WRITE_ZEROES}), (CommandFlag.DF, {Cmd.READ}), (CommandFlag.REQ_ONE, {Cmd.BLOCK_STATUS}),
    (CommandFlag.FAST_ZERO, {Cmd.WRITE_ZEROES}), (CommandFlag.PAYLOAD_LEN, {Cmd.WRITE, Cmd.BLOCK_STATUS}))}


def _ok(reply: ev.Event) -> bool:
    return isinstance(reply, ev.Reply) and reply.completes and not reply.failed


class CacheFlagMismatch(Rule):
    INFO = RuleInfo("cache-flag-mismatch", "warning", "either", "Transmission flags; NBD_CMD_CACHE",
                    "NBD_CMD_CACHE used or answered against the advertised NBD_FLAG_SEND_CACHE (bit 10); the qemu "
                    "3.0 bug put SEND_CACHE on bit 8, which is NBD_FLAG_CAN_MULTI_CONN")
    EVENTS = (ev.Request, ev.SimpleReply, ev.ReplyChunk)
    FOR_COMMANDS = frozenset({Cmd.CACHE})

    def __init__(self) -> None:
        super().__init__()
        self._flagged_servers: set[str] = set()

    def message(self, session: Session, event: ev.Event) -> None:
        if session.transmission_flags is None:
            return
        # the client is judged on the flags it received, the server on those it sent (a proxy may rewrite them)
        if isinstance(event, ev.Request) and event.command == Cmd.CACHE and not session.has_flag(TF.SEND_CACHE):
            multi = session.has_flag(TF.CAN_MULTI_CONN)
            why = ("; the server set bit 8 (NBD_FLAG_CAN_MULTI_CONN) instead, which is where qemu 3.0 misplaced "
                   "SEND_CACHE: this client is probably coded to that wrong bit value" if multi else "")
            self.flag(session, event, f"client sent NBD_CMD_CACHE although the server did not advertise "
                      f"NBD_FLAG_SEND_CACHE (bit 10){why}", blame="client", cookie=event.cookie,
                      transmission_flags=session.transmission_flags)
        elif isinstance(event, ev.SimpleReply | ev.ReplyChunk) and event.command == Cmd.CACHE and _ok(event) \
                and not session.server_has_flag(TF.SEND_CACHE) and session.server_has_flag(TF.CAN_MULTI_CONN) \
                and session.id not in self._flagged_servers:
            self._flagged_servers.add(session.id)
            self.flag(session, event, "server answered NBD_CMD_CACHE with success yet advertises bit 8 "
                      "(NBD_FLAG_CAN_MULTI_CONN) without bit 10 (NBD_FLAG_SEND_CACHE): it probably carries the "
                      "qemu 3.0 misnumbered flag, so its CAN_MULTI_CONN claim cannot be trusted and clients that "
                      "spread writes over several connections to it risk corruption", blame="server",
                      cookie=event.cookie, transmission_flags=session.server_flags)

    def ending(self, sessions: list[Session]) -> None:
        """Name the other connections to an export whose multi-conn claim is in doubt."""
        by_export: dict[tuple[str, str | None], list[Session]] = defaultdict(list)
        for s in sessions:
            by_export[(s.server.host + ":" + str(s.server.port), s.export_name)].append(s)
        for flagged in self._flagged_servers:
            session = next(s for s in sessions if s.id == flagged)
            peers = by_export[(session.server.host + ":" + str(session.server.port), session.export_name)]
            if len(peers) > 1:
                names = ", ".join(f"{p.id} ({p.client})" for p in peers)
                self.flag_at(session, session.last_frame, session.last_time,
                             f"{len(peers)} connections in this capture use that export and rely on its "
                             f"untrustworthy NBD_FLAG_CAN_MULTI_CONN: {names}", blame="server",
                             sessions=[p.id for p in peers])


class CommandNotAdvertised(Rule):
    INFO = RuleInfo("command-not-advertised", "error", "client", "Transmission flags; Request types",
                    "FLUSH, TRIM, WRITE_ZEROES or RESIZE without its transmission flag, or BLOCK_STATUS without a "
                    "negotiated metadata context")
    EVENTS = (ev.Request,)
    FOR_COMMANDS = frozenset({*_NEEDS, Cmd.BLOCK_STATUS})

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request) or session.transmission_flags is None:
            return
        need = _NEEDS.get(event.command)  # type: ignore[call-overload]
        if need is not None and not session.has_flag(need):
            self.flag(session, event, f"{COMMANDS.name(event.command)} sent but the server did not advertise "
                      f"NBD_FLAG_{need.name}", cookie=event.cookie)
        elif event.command == Cmd.BLOCK_STATUS and session.handshake != "unknown" and not session.meta_contexts:
            self.flag(session, event, "NBD_CMD_BLOCK_STATUS sent without any metadata context negotiated by "
                      "NBD_OPT_SET_META_CONTEXT", cookie=event.cookie)


class FlagNotAdvertised(Rule):
    INFO = RuleInfo("flag-not-advertised", "error", "client", "Command flags",
                    "a command flag used without the transmission flag or negotiation it needs, or on a command "
                    "it is not documented for")
    EVENTS = (ev.Request,)

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request) or not event.flags:
            return
        known = session.transmission_flags is not None
        f, cmd, name = event.flags, event.command, COMMANDS.name(event.command)
        problems: list[tuple[str, str]] = []
        if known and f & _FUA and not session.has_flag(TF.SEND_FUA):
            problems.append(("error", "NBD_CMD_FLAG_FUA without NBD_FLAG_SEND_FUA"))
        if known and f & _DF and not session.has_flag(TF.SEND_DF):
            problems.append(("error", "NBD_CMD_FLAG_DF without NBD_FLAG_SEND_DF"))
        if known and f & _FAST_ZERO and not session.has_flag(TF.SEND_FAST_ZERO):
            problems.append(("error", "NBD_CMD_FLAG_FAST_ZERO without NBD_FLAG_SEND_FAST_ZERO"))
        if f & _PAYLOAD_LEN and session.extended_headers is False:
            problems.append(("error", "NBD_CMD_FLAG_PAYLOAD_LEN without extended headers"))
        if known and f & _PAYLOAD_LEN and cmd == Cmd.BLOCK_STATUS \
                and not session.has_flag(TF.BLOCK_STATUS_PAYLOAD):
            problems.append(("warning", "BLOCK_STATUS payload form without NBD_FLAG_BLOCK_STATUS_PAYLOAD"))
        if f & _FUA and cmd not in WRITES and (not known or session.has_flag(TF.SEND_FUA)):
            problems.append(("info", f"NBD_CMD_FLAG_FUA on {name}, which writes nothing (allowed, but pointless)"))
        for flag, valid in _VALID_FOR.items():
            if f & flag and cmd not in valid:
                bit = COMMAND_FLAGS.bit(flag.bit_length() - 1)
                problems.append(("error", f"{bit.name if bit else flag} is not documented for {name}"))
        for severity, text in problems:
            self.flag(session, event, f"{name}: {text}", severity=severity,  # type: ignore[arg-type]
                      flags=f, cookie=event.cookie)


class WriteToReadOnly(Rule):
    INFO = RuleInfo("write-to-read-only", "error", "either", "Transmission flags (NBD_FLAG_READ_ONLY)",
                    "a write-type command on a read-only export, and worse, a server that lets it succeed")
    EVENTS = (ev.Request, ev.SimpleReply, ev.ReplyChunk)
    FOR_COMMANDS = frozenset(WRITES)

    def message(self, session: Session, event: ev.Event) -> None:
        if not session.has_flag(TF.READ_ONLY) and not session.server_has_flag(TF.READ_ONLY):
            return
        if isinstance(event, ev.Request) and event.command in WRITES and session.has_flag(TF.READ_ONLY):
            self.flag(session, event, f"{COMMANDS.name(event.command)} sent to an export advertised read-only",
                      blame="client", severity="warning", cookie=event.cookie)
        elif isinstance(event, ev.SimpleReply | ev.ReplyChunk) and event.command in WRITES and _ok(event) \
                and session.server_has_flag(TF.READ_ONLY):
            self.flag(session, event, f"server reported success for {COMMANDS.name(event.command)} on an export "
                      "it advertised read-only (it must fail every write)", blame="server", cookie=event.cookie)


class MultiConnWithoutFlag(Rule):
    INFO = RuleInfo("multi-conn-without-flag", "warning", "client", "Transmission flags (NBD_FLAG_CAN_MULTI_CONN)",
                    "one client writing over several simultaneous connections to an export that did not "
                    "advertise NBD_FLAG_CAN_MULTI_CONN")
    EVENTS = ()

    def message(self, session: Session, event: ev.Event) -> None:
        return

    def ending(self, sessions: list[Session]) -> None:
        groups: dict[tuple[str, str, int, str | None], list[Session]] = defaultdict(list)
        for s in sessions:
            if s.transmission_flags is not None and not s.has_flag(TF.CAN_MULTI_CONN):
                groups[(s.client.host, s.server.host, s.server.port, s.export_name)].append(s)
        for group in groups.values():
            if len(group) < 2 or not any(c in s.commands for s in group for c in WRITES):
                continue
            group.sort(key=lambda s: s.start_time)
            overlapping = [s for s in group if any(o is not s and o.start_time <= s.last_time and
                                                   s.start_time <= o.last_time for o in group)]
            if len(overlapping) < 2:
                continue
            first = overlapping[0]
            names = ", ".join(f"{s.id} ({s.client})" for s in overlapping)
            self.flag_at(first, first.first_frame, first.start_time,
                         f"{len(overlapping)} simultaneous connections from {first.client.host} to export "
                         f"{first.export_name!r} at {first.server}, with writes, although the server did not "
                         f"advertise NBD_FLAG_CAN_MULTI_CONN: {names}", sessions=[s.id for s in overlapping])
