"""Error values in replies (spec "Error values", and NBD_ESHUTDOWN in "Terminating the transmission
phase"): values outside the spec's list, and the value the spec asks for in the cases it names.

Each check reports once per session and value: a server that passes one raw errno through does so
on every failing request, and one finding says it."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMAND_FLAGS, COMMANDS, ERRORS, Cmd, CommandFlag, Errno, TransmissionFlag
from nbdscope.spec.codes import DEFAULT_MAX_PAYLOAD

E = Errno
_EDQUOT, _EFBIG = 122, 27  # Linux errno values the spec asks servers to map to NBD_ENOSPC
_WRITES = frozenset(int(c) for c in (Cmd.WRITE, Cmd.WRITE_ZEROES))
_READ_TRIM = frozenset(int(c) for c in (Cmd.READ, Cmd.TRIM))
_MODIFY = frozenset(int(c) for c in (Cmd.WRITE, Cmd.WRITE_ZEROES, Cmd.TRIM))
_DF, _FAST_ZERO = int(CommandFlag.DF), int(CommandFlag.FAST_ZERO)
# the commands each command flag other than FUA (valid for all) is documented for
_FLAG_FOR = {int(flag): frozenset(int(c) for c in cmds) for flag, cmds in (
    (CommandFlag.NO_HOLE, (Cmd.WRITE_ZEROES,)), (CommandFlag.DF, (Cmd.READ,)),
    (CommandFlag.REQ_ONE, (Cmd.BLOCK_STATUS,)),
    (CommandFlag.FAST_ZERO, (Cmd.WRITE_ZEROES,)), (CommandFlag.PAYLOAD_LEN, (Cmd.WRITE, Cmd.BLOCK_STATUS)))}


def _check(name: str, rows: tuple[str, ...], summary: str, consequence: str, fix: str, example: str) -> Check:
    return Check(name, rows, summary, consequence=consequence, fix=fix, example=example)


class ErrorValue(Rule):
    INFO = RuleInfo("error-value", "warning", "server", "Error values",
                    "an error value outside the spec's list, or not the one the spec asks for in that case")
    CHECKS = (
        Check("undefined", (), "an error value the spec does not define (a raw errno passed through)",
              severity="warning",
              consequence="the value means different things on different systems; a client treats it as "
                          "NBD_EINVAL at best",
              fix="server: map errno values to the NBD list (EROFS -> NBD_EPERM, ENOENT -> NBD_EINVAL, ...)",
              example="NBD_CMD_WRITE cookie 0x3 failed with error 30, which the spec does not define"),
        _check("unmapped-quota", ("errors.2",), "EDQUOT or EFBIG passed through instead of NBD_ENOSPC",
               "a client does not recognise the value as 'out of space'",
               "server: map EDQUOT and EFBIG to NBD_ENOSPC",
               "NBD_CMD_WRITE cookie 0x3 failed with error 122 (EDQUOT); the spec asks for NBD_ENOSPC"),
        _check("enomem", ("errors.10",), "NBD_ENOMEM returned", "clients may treat it as fatal",
               "server: avoid NBD_ENOMEM; retry or fail with NBD_EIO",
               "NBD_CMD_READ cookie 0x1 failed with NBD_ENOMEM"),
        _check("eoverflow", ("errors.5",), "NBD_EOVERFLOW outside a DF read or an over-long request without payload",
               "a client retries with smaller requests for no reason, or gives up",
               "server: use NBD_EOVERFLOW only for DF reads it cannot send whole or lengths over its maximum "
               "payload", "NBD_CMD_WRITE cookie 0x3 (4096 bytes) failed with NBD_EOVERFLOW"),
        _check("enotsup", ("errors.6",), "NBD_ENOTSUP outside a WRITE_ZEROES with NBD_CMD_FLAG_FAST_ZERO",
               "a client that follows the spec has no fallback for it and fails the operation",
               "server: fail unsupported operations with NBD_EINVAL; keep NBD_ENOTSUP for fast-zero refusals",
               "NBD_CMD_TRIM cookie 0x4 failed with NBD_ENOTSUP"),
        _check("write-beyond-end", ("errors.1",), "a write past the end of the export failed with another error "
               "than NBD_ENOSPC", "the client cannot tell 'past the end' from a media error",
               "server: fail writes beyond the export size with NBD_ENOSPC",
               "NBD_CMD_WRITE cookie 0x3 beyond the end of the export failed with NBD_EIO; expected NBD_ENOSPC"),
        _check("read-beyond-end", ("errors.3",), "a read or trim past the end failed with another error than "
               "NBD_EINVAL", "the client cannot tell a bad request from a media error",
               "server: fail reads and trims beyond the export size with NBD_EINVAL",
               "NBD_CMD_READ cookie 0x1 beyond the end of the export failed with NBD_EIO; expected NBD_EINVAL"),
        _check("unaligned", ("errors.3",), "a read or write off the minimum block size failed with another error "
               "than NBD_EINVAL", "the client cannot tell its own mistake from a media error",
               "server: fail unaligned reads and writes with NBD_EINVAL",
               "NBD_CMD_READ cookie 0x1 not aligned to the 512-byte minimum block failed with NBD_EIO; "
               "expected NBD_EINVAL"),
        _check("read-only", ("errors.4", "cmd-write-zeroes.17"), "a write, trim or write-zeroes on a read-only "
               "export failed with another error than NBD_EPERM",
               "the client does not learn that the export is read-only",
               "server: fail modifying requests on a read-only export with NBD_EPERM",
               "NBD_CMD_WRITE cookie 0x3 on a read-only export failed with error 30; expected NBD_EPERM"),
        _check("unknown-command", ("errors.7",), "an unknown command failed with another error than NBD_EINVAL",
               "the client cannot tell an unsupported command from a failed one",
               "server: fail commands it does not know with NBD_EINVAL",
               "request type 42 cookie 0x7 failed with NBD_EIO; expected NBD_EINVAL"),
        _check("bad-flag", ("errors.8", "errors.9"), "a request with an unknown or inapplicable command flag failed "
               "with another error than NBD_EINVAL", "the client cannot tell a flag problem from a media error",
               "server: fail requests with unknown or misplaced flags with NBD_EINVAL",
               "NBD_CMD_READ cookie 0x1 with flags 0x40 failed with NBD_EIO; expected NBD_EINVAL"),
        _check("after-shutdown", ("transmission-end.4",), "after announcing NBD_ESHUTDOWN the server failed a later "
               "request with another error", "the client does not learn that the server is going away",
               "server: once shutting down, fail every new request with NBD_ESHUTDOWN",
               "NBD_CMD_READ cookie 0x9 failed with NBD_EIO after the server said NBD_ESHUTDOWN in frame 40"),
    )
    EVENTS = (ev.SimpleReply, ev.ReplyChunk)

    def __init__(self) -> None:
        super().__init__()
        self.said: dict[str, set[tuple[str, int]]] = {}  # session -> (check, error) reported
        self.shutdown: dict[str, int] = {}  # session -> frame of the first NBD_ESHUTDOWN reply

    def message(self, session: Session, event: ev.Event) -> None:
        assert isinstance(event, ev.SimpleReply | ev.ReplyChunk)
        error = event.error
        if not error:
            return  # success, or a chunk that carries no error
        if error == E.ESHUTDOWN:
            self.shutdown.setdefault(session.id, event.frame)
            return  # always acceptable: a server may fail anything while shutting down
        if error not in ERRORS:
            if error in (_EDQUOT, _EFBIG):
                self._say(session, event, "unmapped-quota", error, f"failed with error {error} "
                          f"({'EDQUOT' if error == _EDQUOT else 'EFBIG'}); the spec asks for NBD_ENOSPC")
            else:
                self._say(session, event, "undefined", error, f"failed with error {error}, which the spec does "
                          "not define")
        elif error == E.ENOMEM:
            self._say(session, event, "enomem", error, "failed with NBD_ENOMEM")
        if event.command is None:
            return
        since = self.shutdown.get(session.id)
        if since is not None and (event.request_frame or 0) > since:
            self._say(session, event, "after-shutdown", 0, f"failed with {ERRORS.name(error)} after the server "
                      f"said NBD_ESHUTDOWN in frame {since}")
            return
        if error == E.EOVERFLOW and not self._overflow_allowed(session, event):
            self._say(session, event, "eoverflow", error, f"({event.request_length} bytes) failed with NBD_EOVERFLOW")
        elif error == E.ENOTSUP and not (event.command == Cmd.WRITE_ZEROES and (event.request_flags or 0) & _FAST_ZERO):
            self._say(session, event, "enotsup", error, "failed with NBD_ENOTSUP")
        else:
            self._expected(session, event, error)

    @staticmethod
    def _overflow_allowed(session: Session, event: ev.Reply) -> bool:
        if event.command == Cmd.READ and (event.request_flags or 0) & _DF:
            return True
        limit = session.max_payload or DEFAULT_MAX_PAYLOAD
        return event.command != Cmd.WRITE and (event.request_length or 0) > limit

    def _expected(self, session: Session, event: ev.Reply, error: int) -> None:
        """The cases the spec names a value for; flagged only when the error fits none of them."""
        cmd, offset, length = event.command, event.request_offset or 0, event.request_length or 0
        flags = event.request_flags or 0
        cases: list[tuple[str, int, str]] = []
        if session.size is not None and offset + length > session.size:
            if cmd in _WRITES:
                cases.append(("write-beyond-end", E.ENOSPC, "beyond the end of the export"))
            elif cmd in _READ_TRIM:
                cases.append(("read-beyond-end", E.EINVAL, "beyond the end of the export"))
        block = session.min_block
        if block and block > 1 and cmd in (Cmd.READ, Cmd.WRITE) and (offset % block or length % block):
            cases.append(("unaligned", E.EINVAL, f"not aligned to the {block}-byte minimum block"))
        if cmd in _MODIFY and session.server_has_flag(TransmissionFlag.READ_ONLY):
            cases.append(("read-only", E.EPERM, "on a read-only export"))
        if cmd not in COMMANDS:
            cases.append(("unknown-command", E.EINVAL, "of an unknown type"))
        misplaced = any(flags & bit and cmd not in cmds for bit, cmds in _FLAG_FOR.items())
        if COMMAND_FLAGS.reserved(flags) or misplaced:
            cases.append(("bad-flag", E.EINVAL, f"with flags {flags:#x}"))
        if cases and all(error != want for _, want, _ in cases):
            check, want, why = cases[0]
            self._say(session, event, check, error, f"{why} failed with {ERRORS.name(error)}; expected "
                      f"{ERRORS.name(want)}")

    def _say(self, session: Session, event: ev.Reply, check: str, error: int, what: str) -> None:
        said = self.said.setdefault(session.id, set())
        if (check, error) in said:
            return
        said.add((check, error))
        name = COMMANDS.name(event.command) if event.command is not None else "a request"
        self.flag(session, event, f"{name} cookie {event.cookie:#x} {what}", check=check, cookie=event.cookie,
                  error=getattr(event, "error", None))
