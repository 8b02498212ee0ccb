"""TLS rules: STARTTLS, the TLS modes of the spec's TLS section and downgrades."""

from __future__ import annotations

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import OPTIONS, Opt, Rep


class TlsProtocol(Rule):
    INFO = RuleInfo("tls-protocol", "error", "either", "TLS support; Protocol downgrade attacks",
                    "TLS misuse: TLS bytes before STARTTLS was acknowledged, or plaintext option haggling or "
                    "transmission after the server required TLS (a downgrade)")
    EVENTS = (ev.Malformed, ev.OptionReply, ev.OptionRequest, ev.TransmissionStart, ev.ConnectionEnd)

    def __init__(self) -> None:
        super().__init__()
        self.required: dict[str, int] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Malformed) and event.what == "tls-without-starttls":
            self.flag(session, event, f"{event.message}: STARTTLS was not acknowledged, so this stream cannot be "
                      "decoded and the peer is out of step")
        elif isinstance(event, ev.OptionReply) and event.reply == Rep.ERR_TLS_REQD:
            self.required.setdefault(session.id, event.frame)
        elif isinstance(event, ev.OptionRequest) and session.id in self.required and not session.tls \
                and event.option not in (Opt.STARTTLS, Opt.ABORT):
            self.flag(session, event, f"client keeps haggling in plaintext ({OPTIONS.name(event.option)}) after the "
                      f"server required TLS in frame {self.required[session.id]}", severity="warning")
        elif isinstance(event, ev.TransmissionStart) and session.id in self.required and not session.tls:
            self.flag(session, event, f"transmission began in plaintext although the server required TLS in "
                      f"frame {self.required[session.id]}: a downgrade the spec's TLS section forbids",
                      blame="server")
        elif isinstance(event, ev.ConnectionEnd):
            self.required.pop(session.id, None)
