"""Rules for what the decoder itself notices: lost bytes, broken framing, and how connections end.

Blame is the point here. What the capture lost or cut (gaps, snapshot-cut packets, a capture that
starts or stops part-way) is the capture's; a disconnect is a peer's fault only when the spec does
not permit it: after the peer broke a MUST, after a read error in a simple reply, after a payload
length large enough to be a denial of service, or (for the server) with nothing left unanswered,
a party may close."""

from __future__ import annotations

from typing import Any, cast

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, Errno
from nbdscope.spec.codes import DEFAULT_MAX_PAYLOAD

OTHER = {"client": "server", "server": "client"}
SIDE = {"c2s": "client", "s2c": "server"}
DOS_PAYLOAD = DEFAULT_MAX_PAYLOAD  # the spec: a payload up to 2^25 bytes SHOULD NOT be deemed a denial of service
_ESHUTDOWN, _READ, _DISC = int(Errno.ESHUTDOWN), int(Cmd.READ), int(Cmd.DISC)


def _requests(flights: tuple[tuple[int, int, int], ...] | list[tuple[int, int, int]], shown: int = 10) -> str:
    listed = ", ".join(f"{COMMANDS.name(cmd)} cookie {cookie:#x} (frame {frame})" for cookie, cmd, frame in
                       flights[:shown])
    return listed + (f" and {len(flights) - shown} more" if len(flights) > shown else "")


_KINDS = {"greeting": "a greeting", "option": "an option", "option-reply": "an option reply",
          "export-name-reply": "an export-name reply", "reply-chunk": "a reply chunk"}


class CaptureGap(Rule):
    INFO = RuleInfo("capture-gap", "warning", "capture", "(capture completeness)",
                    "the capture lost, cut or did not hold bytes of a connection; findings near the gap may be "
                    "incomplete")
    CHECKS = (
        Check("lost-bytes", severity="warning", summary="bytes of a connection are missing from the capture",
              consequence="messages in or after the lost bytes are not judged; a lost request makes its reply "
                          "look unsolicited, which nbdscope then does not hold against the server",
              fix="capture with a larger snapshot length (tcpdump -s 0) and buffer (-B), or on a quieter host",
              example="4070 bytes missing in s2c; the bytes were inside a payload, so message framing survived"),
        Check("many-gaps", severity="warning", summary="the per-gap findings stopped; the total at the close",
              consequence="as for lost-bytes, over much of the connection",
              fix="as for lost-bytes: the capture tool was dropping packets",
              example="40 more gaps in this connection; 50 gaps and 203500 bytes lost in all"),
        Check("started-mid-stream", severity="info", summary="the capture began after the handshake",
              consequence="negotiated features, export size and block sizes are unknown, so checks that need "
                          "them are skipped",
              fix="start the capture before the client connects",
              example="capture began after the handshake: negotiated features, export size and block sizes are "
                      "unknown"),
        Check("header-only", severity="info",
              summary="the snapshot length cut payload bytes off packets (a header-only capture)",
              consequence="every header is decoded and framing survives, but the data the cut removed cannot be "
                          "checked (--verify-data, read data), nor the payloads of the options, option replies, "
                          "greetings and block status or error chunks it cut (their checks are skipped)",
              fix="none needed for header checks; capture with tcpdump -s 0 to check data contents",
              example="the snapshot length cut 524288 payload bytes off 64 packets (a header-only capture)"),
        Check("ended-mid-exchange", severity="info",
              summary="the capture stopped with requests unanswered or a message cut short",
              consequence="the replies and bytes after the end are not in the capture; neither peer is judged "
                          "on them",
              fix="stop the capture after the client disconnects",
              example="the capture ended with 2 request(s) unanswered: NBD_CMD_READ cookie 0x5 (frame 12), ..."),
    )
    EVENTS = (ev.Gap, ev.ConnectionEnd, ev.TransmissionStart)
    JUDGES_LOSSY = True
    SHOWN = 10  # gaps reported one by one per session; the rest are summed up at the end

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, list[int]] = {}  # session -> [gaps, bytes]
        # session -> [packets, payload bytes, handshake messages, reply chunks] cut inside payloads (the last
        # two: messages decoded from the bytes before the cut, whose payload checks were skipped)
        self.snapped: dict[str, list[int]] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Gap):
            if event.snapped and not event.resync:
                # a header-only capture: the payload's size is known and framing survives; one note per
                # session at its end instead of one per packet
                cut = self.snapped.setdefault(session.id, [0, 0, 0, 0])
                cut[0] += 1
                cut[1] += event.nbytes
                if event.within is not None:
                    cut[3 if event.within == "reply-chunk" else 2] += 1
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
            elif event.within is not None:
                framing = (f"the bytes were inside {_KINDS[event.within]} whose length its header gave, so message "
                           "framing survived; checks of its payload that need them were skipped")
            else:
                framing = "the bytes were inside a payload, so message framing survived"
            self.flag(session, event, f"{event.nbytes} bytes missing in {event.dir}; {framing}", check="lost-bytes",
                      nbytes=event.nbytes, dir=event.dir)
        elif isinstance(event, ev.ConnectionEnd):
            if self.counts.get(session.id, [0])[0] > self.SHOWN:
                gaps, nbytes = self.counts[session.id]
                self.flag(session, event, f"{gaps - self.SHOWN} more gaps in this connection; {gaps} gaps and "
                          f"{nbytes} bytes lost in all (was the capture tool dropping packets?)", check="many-gaps",
                          gaps=gaps, nbytes=nbytes)
            self.counts.pop(session.id, None)
            self._snapped(session, event)
            if event.how == "end-of-capture" and session.transmission:
                self._cut_short(session, event)
        elif isinstance(event, ev.TransmissionStart) and event.how == "mid-stream":
            self.flag(session, event, "capture began after the handshake: negotiated features, export size and "
                      "block sizes are unknown, so checks that need them are skipped", check="started-mid-stream")

    def _snapped(self, session: Session, event: ev.ConnectionEnd) -> None:
        cut = self.snapped.pop(session.id, None)
        if cut is not None:
            packets, nbytes, handshake, chunks = cut
            skipped = []
            if handshake:
                skipped.append(f"the payload checks of {handshake} handshake message(s) it cut (option and option "
                               "reply payloads, greeting and export-name padding)")
            if chunks:
                skipped.append(f"the payload checks of {chunks} block status or error chunk(s) it cut")
            more = "; so were " + " and ".join(skipped) if skipped else ""
            self.flag(session, event, f"the snapshot length cut {nbytes} payload bytes off {packets} packets (a "
                      "header-only capture): every header was decoded, but checks of data contents (--verify-data, "
                      f"read data) were skipped for those bytes{more}", check="header-only", packets=packets,
                      nbytes=nbytes, messages=handshake, chunks=chunks)

    def _cut_short(self, session: Session, event: ev.ConnectionEnd) -> None:
        unparsed = sum(n for _, n in event.unparsed)
        if not event.in_flight and not unparsed:
            return
        parts = []
        if event.in_flight:
            parts.append(f"{len(event.in_flight)} request(s) unanswered: {_requests(event.in_flight)}")
        if unparsed:
            parts.append(f"{unparsed} bytes of an unfinished message")
        self.flag(session, event, f"the capture ended with {' and '.join(parts)}; what followed is not in the "
                  "capture (not a fault of either peer)", check="ended-mid-exchange", blame="capture",
                  in_flight=len(event.in_flight), unparsed=unparsed)


class MalformedMessage(Rule):
    INFO = RuleInfo("malformed-message", "error", "either", "Protocol phases; Transmission",
                    "bytes that are not a valid message at that point of the protocol (bad magic, garbage)")
    CHECKS = (
        Check("bad-magic", severity="error", summary="a message where one was due does not start with its magic",
              consequence="the peer cannot frame the stream; it has to drop the connection",
              fix="the sending side: it wrote bytes out of turn or miscounted a payload before them",
              example="expected a reply magic"),
        Check("tls-without-starttls", severity="error",
              summary="a TLS record where a plaintext message was due",
              consequence="the peer reads the record as a broken message",
              fix="the sending side: start TLS only after NBD_OPT_STARTTLS was acknowledged",
              example="TLS record where an option was due"),
        Check("undecodable-bytes", severity="error",
              summary="bytes skipped before the next valid header (no capture loss before them)",
              consequence="the peer cannot frame these bytes either",
              fix="the sending side: a payload longer than its header said, or stray bytes",
              example="skipped 12 undecodable bytes before the next valid header"),
        Check("after-capture-loss", severity="warning", blame="capture",
              summary="bytes that do not decode, in a direction where the capture lost or never had the start",
              consequence="the lost bytes probably explain them; neither peer is blamed",
              fix="capture from before the connection starts, without drops",
              example="expected a reply magic (after bytes the capture lost in s2c)"),
    )
    EVENTS = (ev.Malformed, ev.Resync)
    JUDGES_LOSSY = True  # blames the capture itself where the loss may explain the bytes

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Malformed) and event.what != "option-after-handshake":
            values = cast(dict[str, Any], dict(event.values))
            if self._capture_lost(session, event):
                self.flag(session, event, f"{event.message} (after bytes the capture lost in {event.dir})",
                          check="after-capture-loss", what=event.what, **values)
                return
            check = "tls-without-starttls" if event.what == "tls-without-starttls" else "bad-magic"
            self.flag(session, event, event.message, check=check, what=event.what, **values)
        elif isinstance(event, ev.Resync) and event.skipped and not event.after_gap:
            if self._capture_lost(session, event):
                self.flag(session, event, f"skipped {event.skipped} undecodable bytes (after bytes the capture "
                          f"lost in {event.dir})", check="after-capture-loss", skipped=event.skipped)
            else:
                self.flag(session, event, f"skipped {event.skipped} undecodable bytes before the next valid header",
                          check="undecodable-bytes", skipped=event.skipped)

    @staticmethod
    def _capture_lost(session: Session, event: ev.Event) -> bool:
        """The capture lost framing in this direction before (a gap outside a payload), or never saw
        its start: the bytes may be the tail of a message whose header was lost."""
        return not session.saw_start or bool(session.lost_framing.get(event.dir))


class HardDisconnect(Rule):
    INFO = RuleInfo("hard-disconnect", "warning", "either", "Terminating the transmission phase",
                    "a connection closed in a way the spec does not permit: without NBD_CMD_DISC or "
                    "NBD_OPT_ABORT, with requests unanswered, or NBD_CMD_DISC sent with requests in flight")
    CHECKS = (
        Check("client-no-disc", ("transmission-end.7",), blame="client",
              summary="the client closed TCP in transmission without NBD_CMD_DISC and without a violation by the "
                      "server to justify it",
              consequence="a server cannot tell a crash from a clean end: it may log an error, and a write-back "
                          "cache it keeps is not flushed on the client's behalf",
              fix="the client: send NBD_CMD_DISC (libnbd nbd_shutdown) before closing; fio's nbd engine and "
                  "nbdsh -c without h.shutdown() do not",
              example="the client closed the connection (fin) without NBD_CMD_DISC"),
        Check("eshutdown-ignored", ("transmission-end.5",), blame="client",
              summary="the client closed TCP without NBD_CMD_DISC after the server replied NBD_ESHUTDOWN",
              consequence="the server's orderly shutdown becomes an abrupt one",
              fix="the client: answer NBD_ESHUTDOWN with NBD_CMD_DISC",
              example="the client closed the connection (fin) without NBD_CMD_DISC although the server replied "
                      "NBD_ESHUTDOWN at frame 40"),
        Check("server-dropped-requests", ("transmission-end.3",), blame="server",
              summary="the server closed TCP while requests were still unanswered",
              consequence="the client must treat those requests as failed, without knowing whether writes "
                          "reached the disk",
              fix="the server: answer (or fail with NBD_ESHUTDOWN) what is in flight before closing",
              example="the server closed the connection (fin) with requests unanswered: NBD_CMD_READ cookie 0x5 "
                      "(frame 30)"),
        Check("disc-unanswered", ("cmd-disc.1",), blame="server",
              summary="after NBD_CMD_DISC the server closed without answering requests sent before it",
              consequence="the client cannot tell whether those requests took effect",
              fix="the server: finish every outstanding request before closing on NBD_CMD_DISC",
              example="the server closed after NBD_CMD_DISC (frame 20) leaving requests sent before it "
                      "unanswered: NBD_CMD_WRITE cookie 0x3 (frame 18)"),
        Check("client-no-abort", ("haggle-end.7",), blame="client",
              summary="the client closed TCP during the handshake without NBD_OPT_ABORT",
              consequence="the server sees a failed negotiation instead of a client that chose to leave",
              fix="the client: send NBD_OPT_ABORT before closing (libnbd and qemu do)",
              example="the client closed the connection (fin) during the handshake without NBD_OPT_ABORT"),
    )
    EVENTS = (ev.ConnectionEnd, ev.Request, ev.SimpleReply, ev.ReplyChunk)

    def __init__(self) -> None:
        super().__init__()
        # session -> why a close by each side is permitted: (side, reason); plus the ESHUTDOWN frame
        self.excused: dict[str, dict[str, str]] = {}
        self.eshutdown: dict[str, int] = {}

    def _excuse(self, session: Session, side: str, why: str) -> None:
        self.excused.setdefault(session.id, {}).setdefault(side, why)

    def message(self, session: Session, event: ev.Event) -> None:
        cls = type(event)
        if cls is ev.SimpleReply:
            if event.error:  # type: ignore[attr-defined]
                self._failed(session, event, event.error)  # type: ignore[attr-defined]
                if event.command == _READ:  # type: ignore[attr-defined]
                    self._excuse(session, "server", f"a read error in a simple reply (frame {event.frame})")
        elif cls is ev.ReplyChunk:
            if event.error:  # type: ignore[attr-defined]
                self._failed(session, event, event.error)  # type: ignore[attr-defined]
            if event.length > DOS_PAYLOAD:  # type: ignore[attr-defined]
                self._excuse(session, "client", f"a {event.length}-byte reply payload (frame {event.frame})")  # type: ignore[attr-defined]
        elif cls is ev.Request:
            if event.payload_length > DOS_PAYLOAD:  # type: ignore[attr-defined]
                self._excuse(session, "server", f"a {event.payload_length}-byte request payload "  # type: ignore[attr-defined]
                             f"(frame {event.frame})")
            # NBD_CMD_DISC with requests in flight: disconnect-protocol.disc-in-flight
        elif isinstance(event, ev.ConnectionEnd):
            try:
                self._ended(session, event)
            finally:
                self.excused.pop(session.id, None)
                self.eshutdown.pop(session.id, None)

    def _failed(self, session: Session, event: ev.Event, error: int) -> None:
        if error == _ESHUTDOWN:
            self.eshutdown.setdefault(session.id, event.frame)

    def _permitted(self, session: Session, side: str) -> bool:
        """The spec lets ``side`` hard-disconnect here: its peer broke a MUST first, or a MAY applies."""
        return OTHER[side] in session.faults or side in self.excused.get(session.id, {})

    def _ended(self, session: Session, event: ev.ConnectionEnd) -> None:
        if event.how == "end-of-capture" or session.proxy_closed or session.hidden or session.lost_sync:
            return  # the capture or the proxy ended it; inside TLS or after lost bytes the close is not readable
        if not session.transmission:
            self._handshake_end(session, event)
            return
        closer = SIDE.get(event.by or "")
        if event.soft:
            self._after_disc(session, event)
            return
        if closer == "client" and not self._permitted(session, "client"):
            shutdown = self.eshutdown.get(session.id)
            if shutdown is not None:
                self.flag(session, event, f"the client closed the connection ({event.how}) without NBD_CMD_DISC "
                          f"although the server replied NBD_ESHUTDOWN at frame {shutdown}", check="eshutdown-ignored",
                          closed_by=event.by)
            else:
                unanswered = f"; unanswered: {_requests(event.in_flight)}" if event.in_flight else ""
                self.flag(session, event, f"the client closed the connection ({event.how}) without NBD_CMD_DISC"
                          f"{unanswered}", check="client-no-disc", in_flight=len(event.in_flight), closed_by=event.by)
        elif closer == "server" and event.in_flight and not self._permitted(session, "server"):
            self.flag(session, event, f"the server closed the connection ({event.how}) with requests unanswered: "
                      f"{_requests(event.in_flight)}", check="server-dropped-requests",
                      in_flight=len(event.in_flight), closed_by=event.by)

    def _after_disc(self, session: Session, event: ev.ConnectionEnd) -> None:
        """A soft disconnect: only requests sent before NBD_CMD_DISC had to be answered, and only a
        server that closed first can be said to have dropped them."""
        left = [f for f in event.in_flight if f[0] in session.disc_pending]
        if left and event.by == "s2c" and not self._permitted(session, "server"):
            self.flag(session, event, f"the server closed after NBD_CMD_DISC (frame {session.disc_frame}) leaving "
                      f"requests sent before it unanswered: {_requests(left)}", check="disc-unanswered",
                      in_flight=len(left))

    def _handshake_end(self, session: Session, event: ev.ConnectionEnd) -> None:
        log = session.handshake_log
        if event.by != "c2s" or log.aborted or session.handshake in ("unknown", "oldstyle"):
            return  # the server closed (it may, e.g. after NBD_OPT_EXPORT_NAME), or the client aborted
        if log.export_name_sent is not None or self._permitted(session, "client"):
            return
        self.flag(session, event, f"the client closed the connection ({event.how}) during the handshake without "
                  "NBD_OPT_ABORT", check="client-no-abort", closed_by=event.by)
