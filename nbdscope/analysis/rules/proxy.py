"""The proxy-action rule: what the nbdscope proxy itself did to a session, reported as the proxy's.

Rewriting transmission flags, holding requests back (--delay), closing sessions at shutdown and
closing a client whose upstream connection failed are deliberate; the relay records each (tap
ACTION records), the session model keeps them, and this rule turns them into info findings blamed
on ``proxy``, so they show in the console, the JSONL and the pcapng's comments, and no rule reports
them as a peer's fault."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from nbdscope import vocab as it
from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine

SHOWN_DELAYS = 3  # delay findings per session; every one is still a pcapng comment


class ProxyAction(Rule):
    INFO = RuleInfo("proxy-action", "info", "proxy", "none: the nbdscope proxy's own doing",
                    "something the nbdscope proxy did to a session on purpose: rewrote transmission flags, "
                    "delayed requests, closed the session at shutdown or because its upstream failed")
    CHECKS = (
        Check("rewrote-flags", severity="info", summary="the proxy changed the transmission flags it forwarded",
              consequence="the client saw other flags than the server sent: the server is judged on what it "
                          "sent, the client on what it received",
              fix="nothing: --set-flags/--clear-flags asked for it", example="nbdscope proxy rewrote transmission "
              "flags 0x0ded -> 0x09ed in NBD_INFO_EXPORT in the reply to NBD_OPT_GO"),
        Check("delayed", severity="info", summary="the proxy held requests back before forwarding them",
              consequence="latencies on this session include the delay",
              fix="nothing: --delay asked for it", example="NBD_CMD_READ (5 ms) delayed by nbdscope proxy (--delay)"),
        Check("closed-at-shutdown", severity="info",
              summary="the proxy closed a session still open when it shut down",
              consequence="the connection ends without NBD_CMD_DISC; that is the proxy's doing, not a peer's",
              fix="nothing, or a longer --grace", example="nbdscope proxy closed this session at shutdown, after "
              "the 5 s grace period (--grace)"),
        Check("upstream-failed", severity="info",
              summary="the proxy could not connect to the upstream server and closed the client's connection",
              consequence="the client got no greeting; the connection carried nothing and no peer is to blame",
              fix="check that the upstream server runs and listens where --upstream says",
              example="nbdscope proxy could not connect to the upstream 127.0.0.1:10809 (Connection refused) and "
              "closed the client's connection"),
    )
    EVENTS = ()
    JUDGES_LOSSY = True
    CHECK_OF: ClassVar[dict[str, str]] = {"rewrite-flags": "rewrote-flags", "delay": "delayed",
                                          "closed-at-shutdown": "closed-at-shutdown",
                                          "upstream-failed": "upstream-failed"}

    def __init__(self) -> None:
        super().__init__()
        self.engine: Engine | None = None
        self.delays: dict[str, int] = {}

    def started(self, engine: Engine) -> None:
        super().started(engine)
        self.engine = engine

    def message(self, session: Session, event: ev.Event) -> None:
        return

    def stream(self, item: it.StreamItem) -> None:
        if type(item) is not it.StreamNote or not item.action or self.engine is None:
            return
        session = self.engine.session_of(item.conn)
        check = self.CHECK_OF.get(item.action)
        if session is None or check is None:
            return
        if check == "delayed":
            seen = self.delays[session.id] = self.delays.get(session.id, 0) + 1
            if seen > SHOWN_DELAYS:
                return
        self.flag_at(session, item.frame, item.time, item.text, check=check, action=item.action,
                     **cast(dict[str, Any], dict(item.values)))
