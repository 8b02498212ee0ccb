"""The handshake-outcome rule: why a connection ended before transmission, as an info finding.

Nothing here is a fault. A client that lists exports and aborts, or asks for an export the server
does not have, did nothing wrong, and neither did the server that said no; but a report that calls
such a session clean and says no more hides why the client never got a disk. The outcome itself is
worked out by ``nbdscope.analysis.outcome`` and kept on the session (text summary, JSON)."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Blame, Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev


def _info(name: str, summary: str, example: str, blame: Blame = "client") -> Check:
    return Check(name, severity="info", blame=blame, summary=summary,
                 consequence="the client never reached transmission, so no I/O happened on this connection",
                 fix="nothing to fix when this is what the client meant; otherwise see the reply and message",
                 example=example)


class HandshakeOutcome(Rule):
    INFO = RuleInfo("handshake-outcome", "info", "client", "Option haggling; Termination of the session",
                    "a connection that ended before transmission, and why: an option refused, TLS required, "
                    "exports listed, information only, the client aborting")
    CHECKS = (
        _info("option-failed", "the option that would have chosen an export (or the client's last) was refused",
              "NBD_OPT_GO 'nosuch' failed with NBD_REP_ERR_UNKNOWN: \"export 'nosuch' not present\"; the client "
              "then aborted (NBD_OPT_ABORT, acknowledged)"),
        _info("tls-required", "the server requires TLS and the client did not start it",
              "the server requires TLS: it answered NBD_OPT_GO with NBD_REP_ERR_TLS_REQD and the client never "
              "started TLS"),
        _info("export-refused", "the server closed after NBD_OPT_EXPORT_NAME (which has no error reply)",
              "the server closed the connection after NBD_OPT_EXPORT_NAME 'x': it refused that export",
              blame="server"),
        _info("exports-listed", "the client listed the exports and left",
              "the client listed the exports (1: ''), without entering transmission"),
        _info("info-only", "the client asked about an export (NBD_OPT_INFO) and left",
              "the client only asked about the export (NBD_OPT_INFO ''), without entering transmission"),
        _info("client-aborted", "the client aborted the handshake with nothing else to say about it",
              "the client aborted the handshake (NBD_OPT_ABORT, acknowledged)"),
        _info("closed", "a side closed the connection during the handshake",
              "the server closed the connection during the handshake while NBD_OPT_GO was its last option"),
        _info("capture-ended", "the capture stopped during the handshake", "the capture ended during the handshake",
              blame="capture"),
        _info("capture-lost", "the capture lost bytes of the handshake", "the capture lost bytes of the handshake, "
              "so how it ended is not known", blame="capture"),
        _info("inside-tls", "the handshake went on inside TLS", "the handshake went on inside TLS, so how it ended "
              "is not visible", blame="capture"),
    )
    EVENTS = (ev.ConnectionEnd,)
    JUDGES_LOSSY = True  # a lossy handshake has its own outcome, blamed on the capture

    def message(self, session: Session, event: ev.Event) -> None:
        outcome = session.outcome
        if outcome is None or session.handshake == "unknown":
            return
        blame: Blame | None = None
        if outcome.kind == "closed":
            # a session the proxy closed (at shutdown, or when its upstream failed) is the proxy's doing
            blame = "proxy" if session.proxy_closed else "server" if getattr(event, "by", None) == "s2c" else "client"
        self.flag(session, event, outcome.summary, check=outcome.kind, blame=blame, kind=outcome.kind,
                  option=outcome.option, error=outcome.error)
