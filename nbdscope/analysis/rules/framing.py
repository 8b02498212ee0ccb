"""Rules for what the decoder itself notices: lost bytes, broken framing,
payloads that contradict their own length fields, and how connections end."""

from __future__ import annotations

from typing import Any, cast

from nbdscope.analysis.anomaly import Blame, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS


class CaptureGap(Rule):
    INFO = RuleInfo("capture-gap", "warning", "capture", "(capture completeness)",
                    "the capture lost bytes of a connection; findings near the gap may be incomplete")
    EVENTS = (ev.Gap, ev.ConnectionEnd, ev.TransmissionStart)
    SHOWN = 10  # gaps reported one by one per session; the rest are summed up at the end

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, list[int]] = {}  # session -> [gaps, bytes]
        self.snapped: dict[str, list[int]] = {}  # session -> [packets, payload bytes] cut inside payloads

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Gap):
            if event.snapped and not event.resync:
                # a header-only capture: the payload's size is known and framing survives; one note per
                # session at its end instead of one per packet
                cut = self.snapped.setdefault(session.id, [0, 0])
                cut[0] += 1
                cut[1] += event.nbytes
                return
            count = self.counts.setdefault(session.id, [0, 0])
            count[0] += 1
            count[1] += event.nbytes
            if count[0] > self.SHOWN:
                return
            if event.snapped:
                framing = "the snapshot length cut a message header, so decoding resumes at the next valid header"
            elif event.resync:
                framing = "decoding resumes at the next valid header"
            else:
                framing = "the bytes were inside a payload, so message framing survived"
            self.flag(session, event, f"{event.nbytes} bytes missing in {event.dir}; {framing}",
                      nbytes=event.nbytes, dir=event.dir)
        elif isinstance(event, ev.ConnectionEnd):
            self._ended(session, event)
        elif isinstance(event, ev.TransmissionStart) and event.how == "mid-stream":
            self.flag(session, event, "capture began after the handshake: negotiated features, export size and "
                      "block sizes are unknown, so checks that need them are skipped", severity="info")

    def _ended(self, session: Session, event: ev.Event) -> None:
        if self.counts.get(session.id, [0])[0] > self.SHOWN:
            gaps, nbytes = self.counts[session.id]
            self.flag(session, event, f"{gaps - self.SHOWN} more gaps in this connection; {gaps} gaps and "
                      f"{nbytes} bytes lost in all (was the capture tool dropping packets?)", gaps=gaps,
                      nbytes=nbytes)
        cut = self.snapped.pop(session.id, None)
        if cut is not None:
            packets, nbytes = cut
            self.flag(session, event, f"the snapshot length cut {nbytes} payload bytes off {packets} packets (a "
                      "header-only capture): every header was decoded, but checks of data contents (--verify-data, "
                      "read data) were skipped for those bytes", severity="info", packets=packets, nbytes=nbytes)


class MalformedMessage(Rule):
    INFO = RuleInfo("malformed-message", "error", "either", "Protocol phases; Transmission",
                    "bytes that are not a valid message at that point of the protocol (bad magic, garbage)")
    EVENTS = (ev.Malformed, ev.Resync)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Malformed) and event.what != "option-after-handshake":
            self.flag(session, event, event.message, blame=None, severity=None, what=event.what,
                      **cast(dict[str, Any], dict(event.values)))
        elif isinstance(event, ev.Resync) and event.skipped and not event.after_gap:
            self.flag(session, event, f"skipped {event.skipped} undecodable bytes before the next valid header",
                      skipped=event.skipped)


class HardDisconnect(Rule):
    INFO = RuleInfo("hard-disconnect", "warning", "either", "Terminating the transmission phase",
                    "a connection in transmission closed without NBD_CMD_DISC, or with requests unanswered")
    EVENTS = (ev.ConnectionEnd,)

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.ConnectionEnd) or event.how == "end-of-capture" or not session.transmission:
            return
        if session.lost_sync:
            return  # the capture lost messages: NBD_CMD_DISC may be among them
        if session.tls:
            return  # the disconnect is inside the encrypted stream
        pending = ", ".join(f"{COMMANDS.name(cmd)} cookie {cookie:#x} (frame {frame})"
                            for cookie, cmd, frame in event.in_flight[:10])
        more = f" and {len(event.in_flight) - 10} more" if len(event.in_flight) > 10 else ""
        if not event.soft:
            who = {"c2s": "the client", "s2c": "the server", None: "one side"}[event.by]
            msg = f"{who} closed the connection ({event.how}) without NBD_CMD_DISC"
            blame: Blame = "server" if event.by == "s2c" or (event.by is None and event.in_flight) else "client"
            self.flag(session, event, msg + (f"; unanswered: {pending}{more}" if pending else ""),
                      blame=blame, in_flight=len(event.in_flight), closed_by=event.by)
        elif event.in_flight:
            self.flag(session, event, f"soft disconnect with requests still unanswered: {pending}{more}",
                      blame="server", in_flight=len(event.in_flight))
