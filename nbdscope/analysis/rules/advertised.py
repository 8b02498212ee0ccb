"""Rules about using what the server did not advertise, and the seeds' flag
confusion (spec "Transmission flags", "Command flags", "Request types")."""

from __future__ import annotations

from collections import defaultdict

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMAND_FLAGS, COMMANDS, Cmd, CommandFlag, Errno, TransmissionFlag

TF = TransmissionFlag
WRITES = {Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.RESIZE}  # commands with the potential of writing
_RO_WRITES = frozenset({Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES})  # what a read-only export must fail
# command -> (transmission flag it needs, check name)
_NEEDS = {Cmd.FLUSH: (TF.SEND_FLUSH, "flush"), Cmd.TRIM: (TF.SEND_TRIM, "trim"),
          Cmd.WRITE_ZEROES: (TF.SEND_WRITE_ZEROES, "write-zeroes"), Cmd.RESIZE: (TF.SEND_RESIZE, "resize")}
# plain ints: `value & IntFlag` builds an enum value each time, too slow per message
_FUA, _DF, _FAST_ZERO, _PAYLOAD_LEN = (int(f) for f in (CommandFlag.FUA, CommandFlag.DF, CommandFlag.FAST_ZERO,
                                                     CommandFlag.PAYLOAD_LEN))
# the commands each command flag is documented for ("Command flags")
_VALID_FOR = {int(flag): valid for flag, valid in (
    (CommandFlag.NO_HOLE, {Cmd.WRITE_ZEROES}), (CommandFlag.DF, {Cmd.READ}), (CommandFlag.REQ_ONE, {Cmd.BLOCK_STATUS}),
    (CommandFlag.FAST_ZERO, {Cmd.WRITE_ZEROES}), (CommandFlag.PAYLOAD_LEN, {Cmd.WRITE, Cmd.BLOCK_STATUS}))}
_EPERM = int(Errno.EPERM)


def _ok(reply: ev.Event) -> bool:
    return isinstance(reply, ev.Reply) and reply.completes and not reply.failed


def _export(s: Session) -> tuple[str, int, str | None]:
    return (s.server.host, s.server.port, s.export_name)


def _overlapping(group: list[Session]) -> list[Session]:
    """The sessions of ``group`` that were open at the same time as another one of it."""
    return [s for s in group if any(o is not s and o.start_time <= s.last_time and s.start_time <= o.last_time
                                    for o in group)]


class CacheFlagMismatch(Rule):
    INFO = RuleInfo("cache-flag-mismatch", "warning", "either", "Transmission flags; NBD_CMD_CACHE",
                    "NBD_CMD_CACHE used or answered against the advertised NBD_FLAG_SEND_CACHE (bit 10); the qemu "
                    "3.0 bug put SEND_CACHE on bit 8, which is NBD_FLAG_CAN_MULTI_CONN")
    CHECKS = (
        Check("cache-unadvertised", (), "client sent NBD_CMD_CACHE although bit 10 (SEND_CACHE) was not set",
              severity="warning", blame="client",
              consequence="the spec knows clients that do this and servers that still answer; a server that does "
                          "not understand CACHE fails it, which costs nothing but the hint. Worth a look when bit 8 "
                          "is set: the client may be coded to qemu 3.0's misplaced SEND_CACHE",
              fix="client: send NBD_CMD_CACHE only when bit 10 is set; never read bit 8 as SEND_CACHE",
              example="client sent NBD_CMD_CACHE although the server did not advertise NBD_FLAG_SEND_CACHE (bit 10)"),
        Check("misnumbered-multi-conn", (), "a server that answers CACHE without bit 10 but with bit 8 is relied on "
              "by several writing connections", severity="warning", blame="server",
              consequence="qemu 3.0 advertised SEND_CACHE on bit 8 (CAN_MULTI_CONN) without a shared cache; clients "
                          "that spread writes over several connections to it can read stale data after a flush. "
                          "A server that really shares its cache and answers CACHE unadvertised is within the spec: "
                          "this is only a hazard",
              fix="server: qemu 3.0.x, upgrade (fixed in qemu 3.1, bit 10); client: keep one writing connection",
              example="server answered NBD_CMD_CACHE with success (frame 18) while advertising bit 8 "
                      "(NBD_FLAG_CAN_MULTI_CONN) and not bit 10 (NBD_FLAG_SEND_CACHE), the mark of qemu 3.0's "
                      "misnumbered flag, and 2 connections write to that export at once relying on bit 8: s1, s2"),
    )
    EVENTS = (ev.Request, ev.SimpleReply, ev.ReplyChunk)
    FOR_COMMANDS = frozenset({Cmd.CACHE})

    def __init__(self) -> None:
        super().__init__()
        self._answered: dict[str, tuple[int, float]] = {}  # session id -> its first successful CACHE reply

    def message(self, session: Session, event: ev.Event) -> None:
        if session.transmission_flags is None:
            return
        # the client is judged on the flags it received, the server on those it sent (a proxy may rewrite them)
        if isinstance(event, ev.Request) and event.command == Cmd.CACHE and not session.has_flag(TF.SEND_CACHE):
            multi = session.has_flag(TF.CAN_MULTI_CONN)
            why = ("; the server set bit 8 (NBD_FLAG_CAN_MULTI_CONN) instead, which is where qemu 3.0 misplaced "
                   "SEND_CACHE: this client may be coded to that wrong bit value" if multi else "")
            self.flag(session, event, f"client sent NBD_CMD_CACHE although the server did not advertise "
                      f"NBD_FLAG_SEND_CACHE (bit 10){why}", check="cache-unadvertised", cookie=event.cookie,
                      transmission_flags=session.transmission_flags)
        elif isinstance(event, ev.SimpleReply | ev.ReplyChunk) and event.command == Cmd.CACHE and _ok(event) \
                and not session.server_has_flag(TF.SEND_CACHE) and session.server_has_flag(TF.CAN_MULTI_CONN) \
                and not session.server_has_flag(TF.READ_ONLY):
            self._answered.setdefault(session.id, (event.frame, event.time))

    def ending(self, sessions: list[Session]) -> None:
        """Only where the capture shows writers relying on bit 8 is the misnumbering a hazard."""
        by_export: dict[tuple[str, int, str | None], list[Session]] = defaultdict(list)
        for s in sessions:
            if s.server_has_flag(TF.CAN_MULTI_CONN) and not s.server_has_flag(TF.READ_ONLY):
                by_export[_export(s)].append(s)
        for sid, (frame, time) in self._answered.items():
            session = next(s for s in sessions if s.id == sid)
            peers = sorted(_overlapping(by_export[_export(session)]), key=lambda s: s.start_time)
            if len(peers) < 2 or not any(c in p.commands for p in peers for c in WRITES):
                continue
            names = ", ".join(f"{p.id} ({p.client})" for p in peers)
            self.flag_at(session, frame, time,
                         f"server answered NBD_CMD_CACHE with success (frame {frame}) while advertising bit 8 "
                         f"(NBD_FLAG_CAN_MULTI_CONN) and not bit 10 (NBD_FLAG_SEND_CACHE), the mark of qemu 3.0's "
                         f"misnumbered flag, and {len(peers)} connections write to that export at once relying on "
                         f"bit 8: {names}", check="misnumbered-multi-conn", sessions=[p.id for p in peers])


class CommandNotAdvertised(Rule):
    INFO = RuleInfo("command-not-advertised", "error", "client", "Transmission flags; Request types",
                    "FLUSH, TRIM, WRITE_ZEROES or RESIZE without its transmission flag, or BLOCK_STATUS without a "
                    "negotiated metadata context")
    _FIX = "client: test the transmission flag before sending the command (libnbd: strict mode on)"
    CHECKS = (
        Check("flush", ("tflags.2", "cmd-flush.2", "baseline.4"), "NBD_CMD_FLUSH without NBD_FLAG_SEND_FLUSH",
              consequence="the server may not implement flush at all: the client believes data durable that is not",
              fix=_FIX, example="NBD_CMD_FLUSH sent but the server did not advertise NBD_FLAG_SEND_FLUSH"),
        Check("trim", ("tflags.2", "cmd-trim.4", "baseline.4"), "NBD_CMD_TRIM without NBD_FLAG_SEND_TRIM",
              consequence="a server that does not know TRIM fails it, or worse misreads it",
              fix=_FIX, example="NBD_CMD_TRIM sent but the server did not advertise NBD_FLAG_SEND_TRIM"),
        Check("write-zeroes", ("tflags.2", "cmd-write-zeroes.4", "baseline.4"),
              "NBD_CMD_WRITE_ZEROES without NBD_FLAG_SEND_WRITE_ZEROES",
              consequence="a server without WRITE_ZEROES fails it; the area keeps its old contents",
              fix=_FIX, example="NBD_CMD_WRITE_ZEROES sent but the server did not advertise "
                                "NBD_FLAG_SEND_WRITE_ZEROES"),
        Check("resize", ("baseline.4",), "NBD_CMD_RESIZE without NBD_FLAG_SEND_RESIZE",
              consequence="the RESIZE extension is experimental; a server that did not offer it cannot resize",
              fix=_FIX, example="NBD_CMD_RESIZE sent but the server did not advertise NBD_FLAG_SEND_RESIZE"),
    )
    EVENTS = (ev.Request,)
    FOR_COMMANDS = frozenset(_NEEDS)  # BLOCK_STATUS without a context: block-status.no-context

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request) or session.transmission_flags is None:
            return
        need = _NEEDS.get(event.command)  # type: ignore[call-overload]
        if need is not None and not session.has_flag(need[0]):
            self.flag(session, event, f"{COMMANDS.name(event.command)} sent but the server did not advertise "
                      f"NBD_FLAG_{need[0].name}", check=need[1], cookie=event.cookie)


class FlagNotAdvertised(Rule):
    INFO = RuleInfo("flag-not-advertised", "error", "client", "Command flags",
                    "a command flag used without the transmission flag or negotiation it needs, or on a command "
                    "it is not documented for")
    _FIX = "client: set a command flag only when its transmission flag was advertised (libnbd: strict mode on)"
    CHECKS = (
        Check("fua", ("tflags.2", "cmdflags.1"), "NBD_CMD_FLAG_FUA without NBD_FLAG_SEND_FUA",
              consequence="a server without FUA support may refuse the request or ignore the flag: the write is "
                          "then not durable when the reply comes", fix=_FIX,
              example="NBD_CMD_WRITE: NBD_CMD_FLAG_FUA without NBD_FLAG_SEND_FUA"),
        Check("df", ("tflags.7", "cmdflags.8"), "NBD_CMD_FLAG_DF without NBD_FLAG_SEND_DF",
              consequence="the server may fragment the read reply anyway, or refuse it", fix=_FIX,
              example="NBD_CMD_READ: NBD_CMD_FLAG_DF without NBD_FLAG_SEND_DF"),
        Check("fast-zero", ("tflags.12", "cmdflags.11", "cmd-write-zeroes.5"),
              "NBD_CMD_FLAG_FAST_ZERO without NBD_FLAG_SEND_FAST_ZERO",
              consequence="a server that does not know the flag may do a slow zeroing the client meant to avoid",
              fix=_FIX, example="NBD_CMD_WRITE_ZEROES: NBD_CMD_FLAG_FAST_ZERO without NBD_FLAG_SEND_FAST_ZERO"),
        Check("fua-non-write", ("cmdflags.3",), "NBD_CMD_FLAG_FUA on a command that writes nothing",
              consequence="harmless to a correct server (it must accept it), but some servers refuse it",
              fix="client: set FUA only on WRITE, WRITE_ZEROES and TRIM",
              example="NBD_CMD_READ: NBD_CMD_FLAG_FUA on NBD_CMD_READ, which writes nothing"),
        Check("not-for-command", ("cmdflags.1",), "a command flag on a command it is not documented for",
              consequence="the server should refuse the request with EINVAL; one that does not may misread it",
              fix="client: set NO_HOLE and FAST_ZERO only on WRITE_ZEROES, DF only on READ, REQ_ONE only on "
                  "BLOCK_STATUS", example="NBD_CMD_READ: NBD_CMD_FLAG_REQ_ONE is not documented for NBD_CMD_READ"),
    )
    EVENTS = (ev.Request,)

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request) or not event.flags:
            return
        known = session.transmission_flags is not None
        f, cmd, name = event.flags, event.command, COMMANDS.name(event.command)
        problems: list[tuple[str, str]] = []
        if known and f & _FUA and not session.has_flag(TF.SEND_FUA):
            problems.append(("fua", "NBD_CMD_FLAG_FUA without NBD_FLAG_SEND_FUA"))
        if known and f & _DF and not session.has_flag(TF.SEND_DF):
            problems.append(("df", "NBD_CMD_FLAG_DF without NBD_FLAG_SEND_DF"))
        if known and f & _FAST_ZERO and not session.has_flag(TF.SEND_FAST_ZERO):
            problems.append(("fast-zero", "NBD_CMD_FLAG_FAST_ZERO without NBD_FLAG_SEND_FAST_ZERO"))
        # NBD_CMD_FLAG_PAYLOAD_LEN, with or without extended headers and the payload form: extended-headers'
        if f & _FUA and cmd not in WRITES and known and session.has_flag(TF.SEND_FUA):
            problems.append(("fua-non-write", f"NBD_CMD_FLAG_FUA on {name}, which writes nothing"))
        for flag, valid in _VALID_FOR.items():
            if flag == _PAYLOAD_LEN and not event.extended:
                continue  # a compact request cannot carry it at all: extended-headers.payload-len-compact
            if f & flag and cmd not in valid:
                bit = COMMAND_FLAGS.bit(flag.bit_length() - 1)
                problems.append(("not-for-command", f"{bit.name if bit else flag} is not documented for {name}"))
        for check, text in problems:
            self.flag(session, event, f"{name}: {text}", check=check, flags=f, cookie=event.cookie)


class WriteToReadOnly(Rule):
    INFO = RuleInfo("write-to-read-only", "error", "server", "Transmission flags (NBD_FLAG_READ_ONLY)",
                    "a server that lets a write, trim or write-zeroes succeed on an export it advertised read-only")
    CHECKS = (
        Check("write-succeeded", ("tflags.4",), "a write-type command succeeded on an export advertised read-only",
              consequence="the client was told the export cannot change, yet it changed (or the server lied about "
                          "writing it): other readers of a read-only export see data move under them",
              fix="server: fail every WRITE, TRIM and WRITE_ZEROES on a read-only export (NBD_EPERM)",
              example="server reported success for NBD_CMD_WRITE on an export it advertised read-only"),
    )
    EVENTS = (ev.SimpleReply, ev.ReplyChunk)
    FOR_COMMANDS = frozenset(_RO_WRITES)

    def message(self, session: Session, event: ev.Event) -> None:
        if not session.server_has_flag(TF.READ_ONLY) or not isinstance(event, ev.SimpleReply | ev.ReplyChunk) \
                or event.command not in _RO_WRITES:
            return
        if not event.completes:
            return
        if not event.failed:  # a failure with another error than NBD_EPERM is error-value.read-only's
            self.flag(session, event, f"server reported success for {COMMANDS.name(event.command)} on an export it "
                      "advertised read-only (it must fail every write)", check="write-succeeded", cookie=event.cookie)


class MultiConnWithoutFlag(Rule):
    INFO = RuleInfo("multi-conn-without-flag", "warning", "client", "Transmission flags (NBD_FLAG_CAN_MULTI_CONN)",
                    "one client writing over several simultaneous connections to an export that did not "
                    "advertise NBD_FLAG_CAN_MULTI_CONN")
    CHECKS = (
        Check("multiplexed", ("tflags.9",), "writes spread over simultaneous connections without CAN_MULTI_CONN",
              consequence="without a shared cache a flush on one connection need not cover writes made on another: "
                          "reads can return stale data",
              fix="client: use one connection unless the server sets NBD_FLAG_CAN_MULTI_CONN (nbdcopy, qemu-img "
                  "and libnbd do check it); server: advertise it if its cache is shared",
              example="2 simultaneous connections from 127.0.0.1 to export 'disk' at 127.0.0.1:10809, with writes, "
                      "although the server did not advertise NBD_FLAG_CAN_MULTI_CONN: s1, s2"),
    )
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
            overlapping = _overlapping(group)
            if len(overlapping) < 2:
                continue
            first = overlapping[0]
            names = ", ".join(f"{s.id} ({s.client})" for s in overlapping)
            self.flag_at(first, first.first_frame, first.start_time,
                         f"{len(overlapping)} simultaneous connections from {first.client.host} to export "
                         f"{first.export_name!r} at {first.server}, with writes, although the server did not "
                         f"advertise NBD_FLAG_CAN_MULTI_CONN: {names}", check="multiplexed",
                         sessions=[s.id for s in overlapping])
