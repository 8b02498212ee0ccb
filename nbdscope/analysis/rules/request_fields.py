"""Fields of a request that its command fixes (spec "Request types": DISC and FLUSH carry no range,
WRITE/TRIM/WRITE_ZEROES should not be empty, CACHE flags, WRITE_ZEROES past the end)."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.outcomes import ReplyErrors
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, ERRORS, Cmd, CommandFlag, Errno, TransmissionFlag

TF = TransmissionFlag
_FUA, _ENOSPC = int(CommandFlag.FUA), int(Errno.ENOSPC)
# command -> (check for a zero length, check for the server hanging up on it)
_EMPTY = {Cmd.WRITE: ("write-zero-length", "write-zero-length-disconnect"),
          Cmd.TRIM: ("trim-zero-length", "trim-zero-length-disconnect"),
          Cmd.WRITE_ZEROES: ("zeroes-zero-length", "zeroes-zero-length-disconnect")}
_RANGELESS = {Cmd.DISC: "disc-offset-length", Cmd.FLUSH: "flush-offset-length"}


def _empty(command: str, rows: tuple[str, str]) -> tuple[Check, Check]:
    name = command.removeprefix("NBD_CMD_").lower().replace("_", "-")
    short = "zeroes" if name == "write-zeroes" else name
    return (
        Check(f"{short}-zero-length", (rows[0],), f"{command} with length 0", blame="client",
              consequence="what a server does with it is unspecified: simple servers have been seen to divide by "
                          "it or assert", fix=f"client: skip empty {command} requests",
              example=f"{command} (cookie 0x2) has length 0, whose effect the spec leaves unspecified"),
        Check(f"{short}-zero-length-disconnect", (rows[1],), f"the server hung up on a {command} of length 0",
              blame="server", consequence="the client loses the connection and every request in flight",
              fix="server: answer an empty request (success or an error) instead of disconnecting",
              example=f"server closed the connection with the {command} of length 0 (cookie 0x2, frame 9) "
                      "unanswered"),
    )


class RequestFields(Rule):
    INFO = RuleInfo("request-fields", "error", "either", "Request types",
                    "a request field its command fixes (DISC/FLUSH range, empty writes, CACHE flags) and what the "
                    "server does with it")
    CHECKS = (
        Check("disc-offset-length", ("cmd-disc.3",), "NBD_CMD_DISC with a non-zero offset or length",
              blame="client", consequence="a strict server may treat the request as malformed",
              fix="client: send NBD_CMD_DISC with offset and length 0",
              example="NBD_CMD_DISC carries offset 0 and length 512; both must be 0"),
        Check("flush-offset-length", ("cmd-flush.3",), "NBD_CMD_FLUSH with a non-zero offset or length",
              blame="client", consequence="strict servers (nbdkit) refuse such a flush with EINVAL: the client "
                                          "then thinks its data is not durable",
              fix="client: send NBD_CMD_FLUSH with offset and length 0 (flush is always of the whole export)",
              example="NBD_CMD_FLUSH carries offset 4096 and length 0; both must be 0"),
        *_empty("NBD_CMD_WRITE", ("cmd-write.2", "cmd-write.3")),
        *_empty("NBD_CMD_TRIM", ("cmd-trim.1", "cmd-trim.2")),
        *_empty("NBD_CMD_WRITE_ZEROES", ("cmd-write-zeroes.1", "cmd-write-zeroes.2")),
        Check("cache-flags-accepted", ("cmd-cache.3",), "NBD_CMD_CACHE with a command flag the server cannot "
              "know answered with success by a server that advertised SEND_CACHE", blame="server",
              consequence="future flags will ask for caching behaviours; a server that ignores them lets the "
                          "client believe it got one", fix="server: fail CACHE with any flag it does not know "
                                                           "(NBD_EINVAL)",
              example="server answered NBD_CMD_CACHE with flags 0x0002 (cookie 0x5) with success; it advertised "
                      "NBD_FLAG_SEND_CACHE and must refuse flags it does not know"),
        Check("zeroes-beyond-end-not-enospc", ("cmd-write-zeroes.16",), "a WRITE_ZEROES past the end of the "
              "export failed with another error than NBD_ENOSPC", blame="server",
              consequence="the client cannot tell 'no room' from other failures",
              fix="server: answer write-zeroes beyond the export's size with NBD_ENOSPC (28)",
              example="NBD_CMD_WRITE_ZEROES past the end of the export (cookie 0x3) failed with NBD_EINVAL (22), "
                      "not NBD_ENOSPC"),
    )
    EVENTS = (ev.Request, ev.SimpleReply, ev.ReplyChunk, ev.ConnectionEnd)
    FOR_COMMANDS = frozenset({*_EMPTY, *_RANGELESS, Cmd.CACHE})

    def __init__(self) -> None:
        super().__init__()
        self._errors = ReplyErrors()

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request):
            self._request(session, event)
        elif isinstance(event, ev.SimpleReply | ev.ReplyChunk):
            self._reply(session, event)
        elif isinstance(event, ev.ConnectionEnd):
            self._hung_up(session, event)

    def _request(self, session: Session, event: ev.Request) -> None:
        name = COMMANDS.name(event.command)
        check = _RANGELESS.get(event.command)  # type: ignore[call-overload]
        if check is not None and (event.offset or event.length):
            self.flag(session, event, f"{name} carries offset {event.offset} and length {event.length}; both must "
                      "be 0", check=check, cookie=event.cookie, offset=event.offset, length=event.length)
        empty = _EMPTY.get(event.command)  # type: ignore[call-overload]
        if empty is not None and event.length == 0:
            self.flag(session, event, f"{name} (cookie {event.cookie:#x}) has length 0, whose effect the spec "
                      "leaves unspecified", check=empty[0], cookie=event.cookie)

    def _reply(self, session: Session, event: ev.Reply) -> None:
        error = self._errors.completed(session, event)
        if error is None or session.transmission_flags is None:
            return
        flags = event.request_flags or 0
        if event.command == Cmd.CACHE and not error and session.has_flag(TF.SEND_CACHE):
            unknown = flags & ~(_FUA if session.has_flag(TF.SEND_FUA) else 0)
            if unknown:
                self.flag(session, event, f"server answered NBD_CMD_CACHE with flags {flags:#06x} (cookie "
                          f"{event.cookie:#x}) with success; it advertised NBD_FLAG_SEND_CACHE and must refuse "
                          "flags it does not know", check="cache-flags-accepted", cookie=event.cookie, flags=flags)
        elif event.command == Cmd.WRITE_ZEROES and error and error != _ENOSPC and session.size is not None \
                and not session.has_flag(TF.READ_ONLY) and event.request_offset is not None \
                and event.request_length is not None \
                and event.request_offset + event.request_length > session.size:
            self.flag(session, event, f"NBD_CMD_WRITE_ZEROES past the end of the export (cookie {event.cookie:#x}) "
                      f"failed with {ERRORS.name(error)} ({error}), not NBD_ENOSPC",
                      check="zeroes-beyond-end-not-enospc", cookie=event.cookie, error=error)

    def _hung_up(self, session: Session, event: ev.ConnectionEnd) -> None:
        if event.soft or event.by != "s2c" or session.lost_sync:
            return
        for cookie, command, frame in event.in_flight:
            flight = session.in_flight.get(cookie)
            empty = _EMPTY.get(command)  # type: ignore[call-overload]
            if empty is not None and flight is not None and flight.request.length == 0:
                name = COMMANDS.name(command)
                self.flag(session, event, f"server closed the connection with the {name} of length 0 (cookie "
                          f"{cookie:#x}, frame {frame}) unanswered", check=empty[1], cookie=cookie)
                return
