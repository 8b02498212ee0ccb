"""Why a connection ended before transmission: what the option haggling got to.

``HandshakeLog`` follows the options and their replies (decoder events only) and, once the
connection ends, names the outcome: an option refused with which error and message, TLS
required, exports listed, information only, the client aborting, the server closing after
NBD_OPT_EXPORT_NAME, or a capture that stopped first. The session keeps it and reports it
(text summary, JSON session object, the ``handshake-outcome`` info finding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbdscope.decoder import events as ev
from nbdscope.spec import OPTION_REPLIES, OPTIONS, Opt, Rep
from nbdscope.spec.codes import REP_ERR_BIT

_EXPORT_OPTIONS = frozenset((int(Opt.GO), int(Opt.INFO), int(Opt.EXPORT_NAME)))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handshake that never reached transmission ended with."""

    kind: str  # option-failed, tls-required, export-refused, exports-listed, info-only, client-aborted,
    #            closed, capture-ended, capture-lost, inside-tls
    summary: str  # one line, for the text report and the finding
    option: str | None = None  # the option that failed, when one did
    error: str | None = None  # its error reply
    message: str | None = None  # the server's text with it
    export: str | None = None  # the export the failed option named
    exports: tuple[str, ...] = ()  # names NBD_OPT_LIST returned
    aborted: bool = False  # the client sent NBD_OPT_ABORT
    abort_acked: bool = False  # and the server acknowledged it

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "summary": self.summary, "option": self.option, "error": self.error,
                "message": self.message, "export": self.export, "exports": list(self.exports),
                "aborted": self.aborted, "abort_acked": self.abort_acked}


@dataclass(frozen=True, slots=True)
class _Failure:
    option: int
    reply: int
    message: str | None
    export: str | None
    frame: int


@dataclass
class HandshakeLog:
    """The option haggling of one connection, as far as an outcome needs it."""

    asked: dict[int, str | None] = field(default_factory=dict)  # option -> export it named, latest request
    last_option: int | None = None  # the last option other than NBD_OPT_ABORT
    failures: list[_Failure] = field(default_factory=list)
    succeeded: set[int] = field(default_factory=set)  # options acknowledged
    listed: list[str] = field(default_factory=list)
    aborted: bool = False
    abort_acked: bool = False
    export_name_sent: str | None = None
    export_ok_frame: int = -1  # latest success of an option that selects an export

    def observe(self, e: ev.Event) -> None:
        if isinstance(e, ev.OptionRequest):
            if e.option == Opt.ABORT:
                self.aborted = True
                return
            self.last_option = e.option
            self.asked[e.option] = e.export_name
            if e.option == Opt.EXPORT_NAME:
                self.export_name_sent = e.export_name or ""
        elif isinstance(e, ev.OptionReply) and e.solicited:
            if e.reply & REP_ERR_BIT:
                self.failures.append(_Failure(e.option, e.reply, e.message, self.asked.get(e.option), e.frame))
            elif e.reply == Rep.ACK:
                self.succeeded.add(e.option)
                if e.option in _EXPORT_OPTIONS:
                    self.export_ok_frame = e.frame
                if e.option == Opt.ABORT:
                    self.abort_acked = True
            elif e.reply == Rep.SERVER and e.option == Opt.LIST:
                self.listed.append(e.name or "")

    def outcome(self, end: ev.ConnectionEnd, tls: bool, lost: bool = False, proxy: bool = False) -> Outcome:
        """The outcome once the connection ended in the handshake (``tls``: it went on encrypted; ``lost``:
        the capture lost framing, so what was said is not all known; ``proxy``: the nbdscope proxy closed it)."""
        tail = ""
        if self.aborted:
            tail = "; the client then aborted (NBD_OPT_ABORT" + (", acknowledged)" if self.abort_acked else ")")
        flags: dict[str, Any] = {"aborted": self.aborted, "abort_acked": self.abort_acked}
        if lost:
            return Outcome("capture-lost", "the capture lost bytes of the handshake, so how it ended is not known",
                           **flags)
        if tls:
            return Outcome("inside-tls", "the handshake went on inside TLS, so how it ended is not visible", **flags)
        tls_refused = next((f for f in reversed(self.failures) if f.reply == Rep.ERR_TLS_REQD), None)
        if tls_refused is not None and not self.succeeded & _EXPORT_OPTIONS:
            return Outcome("tls-required", f"the server requires TLS: it answered {OPTIONS.name(tls_refused.option)} "
                           f"with NBD_REP_ERR_TLS_REQD{_said(tls_refused.message)} and the client never started "
                           f"TLS{tail}", option=OPTIONS.name(tls_refused.option),
                           error=OPTION_REPLIES.name(tls_refused.reply), message=tls_refused.message,
                           export=tls_refused.export, **flags)
        failed = self._decisive_failure()
        if failed is not None:
            named = f" {failed.export!r}" if failed.export is not None else ""
            return Outcome("option-failed", f"{OPTIONS.name(failed.option)}{named} failed with "
                           f"{OPTION_REPLIES.name(failed.reply)}{_said(failed.message)}{tail}",
                           option=OPTIONS.name(failed.option), error=OPTION_REPLIES.name(failed.reply),
                           message=failed.message, export=failed.export, **flags)
        if self.export_name_sent is not None and not self.aborted:
            return Outcome("export-refused", f"the server closed the connection after NBD_OPT_EXPORT_NAME "
                           f"{self.export_name_sent!r}: it refused that export (that option has no error reply)",
                           option="NBD_OPT_EXPORT_NAME", export=self.export_name_sent, **flags)
        if Opt.LIST in self.succeeded or self.listed:
            names = ", ".join(repr(n) for n in self.listed[:8]) + (" ..." if len(self.listed) > 8 else "")
            extra = " and asked about an export" if Opt.INFO in self.succeeded else ""
            return Outcome("exports-listed", f"the client listed the exports ({len(self.listed)}: {names or 'none'})"
                           f"{extra}, without entering transmission{tail}", exports=tuple(self.listed), **flags)
        if Opt.INFO in self.succeeded:
            return Outcome("info-only", f"the client only asked about the export (NBD_OPT_INFO {self._info_name()})"
                           f", without entering transmission{tail}", export=self.asked.get(int(Opt.INFO)), **flags)
        if self.aborted:
            return Outcome("client-aborted", "the client aborted the handshake (NBD_OPT_ABORT" +
                           (", acknowledged)" if self.abort_acked else ")"), **flags)
        if end.how == "end-of-capture":
            return Outcome("capture-ended", "the capture ended during the handshake", **flags)
        sides = {"c2s": "the client", "s2c": "the server"}
        who = "the nbdscope proxy" if proxy else sides.get(end.by or "", "one side")
        pending = f" while {OPTIONS.name(self.last_option)} was its last option" if self.last_option else ""
        return Outcome("closed", f"{who} closed the connection during the handshake{pending}", **flags)

    def _decisive_failure(self) -> _Failure | None:
        """The failed option the client gave up on: the latest failure of an option that selects an
        export when none of those succeeded after it; otherwise a failure of the client's last option."""
        for f in reversed(self.failures):
            if f.option in _EXPORT_OPTIONS and f.frame > self.export_ok_frame:
                return f
        last = self.failures[-1] if self.failures else None
        return last if last is not None and last.option == self.last_option else None

    def _info_name(self) -> str:
        name = self.asked.get(int(Opt.INFO))
        return repr(name) if name is not None else "of the default export"


def _said(message: str | None) -> str:
    return f": {message!r}" if message else ""
