"""Rules for what the decoder itself notices: lost bytes, broken framing,
payloads that contradict their own length fields, and how connections end."""

from __future__ import annotations

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS


class CaptureGap(Rule):
    INFO = RuleInfo("capture-gap", "warning", "capture", "(capture completeness)",
                    "the capture lost bytes of a connection; findings near the gap may be incomplete")

    def on_event(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Gap):
            framing = "decoding resumes at the next valid header" if event.resync else \
                "the bytes were inside a payload, so message framing survived"
            self.flag(session, event, f"{event.nbytes} bytes missing in {event.dir}; {framing}",
                      nbytes=event.nbytes, dir=event.dir)
        elif isinstance(event, ev.TransmissionStart) and event.how == "mid-stream":
            self.flag(session, event, "capture began after the handshake: negotiated features, export size and "
                      "block sizes are unknown, so checks that need them are skipped", severity="info")


class MalformedMessage(Rule):
    INFO = RuleInfo("malformed-message", "error", "either", "Protocol phases; Transmission",
                    "bytes that are not a valid message at that point of the protocol (bad magic, garbage)")

    def on_event(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Malformed) and event.what != "option-after-handshake":
            self.flag(session, event, event.message, what=event.what, **event.values)
        elif isinstance(event, ev.Resync) and event.skipped and not event.after_gap:
            self.flag(session, event, f"skipped {event.skipped} undecodable bytes before the next valid header",
                      skipped=event.skipped)


class HardDisconnect(Rule):
    INFO = RuleInfo("hard-disconnect", "warning", "either", "Terminating the transmission phase",
                    "a connection in transmission closed without NBD_CMD_DISC, or with requests unanswered")

    def on_event(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.ConnectionEnd) or event.how == "end-of-capture" or not session.transmission:
            return
        if session.tls:
            return  # the disconnect is inside the encrypted stream
        pending = ", ".join(f"{COMMANDS.name(cmd)} cookie {cookie:#x} (frame {frame})"
                            for cookie, cmd, frame in event.in_flight[:10])
        more = f" and {len(event.in_flight) - 10} more" if len(event.in_flight) > 10 else ""
        if not event.soft:
            msg = f"connection closed ({event.how}) without NBD_CMD_DISC"
            self.flag(session, event, msg + (f"; unanswered: {pending}{more}" if pending else ""),
                      blame="client" if not event.in_flight else "server", in_flight=len(event.in_flight))
        elif event.in_flight:
            self.flag(session, event, f"soft disconnect with requests still unanswered: {pending}{more}",
                      blame="server", in_flight=len(event.in_flight))
