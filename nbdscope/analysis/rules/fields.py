"""Rules on flag fields and enumerated values (spec "Flag fields", "Request types")."""

from __future__ import annotations

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import (
    CLIENT_FLAGS,
    COMMAND_FLAGS,
    COMMANDS,
    HANDSHAKE_FLAGS,
    REPLY_FLAGS,
    TRANSMISSION_FLAGS,
    TransmissionFlag,
)

TF = TransmissionFlag


def _bits(mask: int) -> str:
    return ", ".join(str(n) for n in range(64) if mask >> n & 1)


class ReservedBitsSet(Rule):
    INFO = RuleInfo("reserved-bits-set", "error", "either", "Flag fields",
                    "a bit the spec does not define is set in a flags field")
    EVENTS = (ev.ServerGreeting, ev.ClientFlags, ev.Request, ev.ReplyChunk, ev.OptionReply, ev.ExportNameReply)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request):  # the common events first
            if COMMAND_FLAGS.reserved(event.flags):
                self.flag(session, event, f"{COMMANDS.name(event.command)} sets undefined command flag bit(s) "
                          f"{_bits(COMMAND_FLAGS.reserved(event.flags))}", value=event.flags, cookie=event.cookie)
        elif isinstance(event, ev.ReplyChunk):
            if REPLY_FLAGS.reserved(event.flags):
                self.flag(session, event, f"reply chunk sets undefined reply flag bit(s) "
                          f"{_bits(REPLY_FLAGS.reserved(event.flags))}", value=event.flags, cookie=event.cookie)
        elif isinstance(event, ev.ServerGreeting):
            if event.handshake_flags is not None and HANDSHAKE_FLAGS.reserved(event.handshake_flags):
                self.flag(session, event, f"handshake flags {event.handshake_flags:#06x} set undefined bit(s) "
                          f"{_bits(HANDSHAKE_FLAGS.reserved(event.handshake_flags))}", value=event.handshake_flags)
            if event.oldstyle_high_flags:
                self.flag(session, event, f"oldstyle greeting sets the reserved upper 16 flag bits "
                          f"({event.oldstyle_high_flags:#06x})", value=event.oldstyle_high_flags)
        elif isinstance(event, ev.ClientFlags):
            if CLIENT_FLAGS.reserved(event.flags):
                self.flag(session, event, f"client flags {event.flags:#010x} set undefined bit(s) "
                          f"{_bits(CLIENT_FLAGS.reserved(event.flags))}; the server must then drop the connection",
                          value=event.flags)
        else:
            tflags = session.sent_flags(getattr(event, "transmission_flags", None))  # as the server sent them
            if tflags is not None and not isinstance(event, ev.TransmissionStart) \
                    and TRANSMISSION_FLAGS.reserved(tflags):
                self.flag(session, event, f"transmission flags {tflags:#06x} set undefined bit(s) "
                          f"{_bits(TRANSMISSION_FLAGS.reserved(tflags))} (clients ignore them)",
                          severity="warning", value=tflags)


class TransmissionFlagsInvalid(Rule):
    INFO = RuleInfo("transmission-flags-invalid", "error", "server", "Transmission flags",
                    "transmission flags that contradict themselves or the negotiation (HAS_FLAGS clear, "
                    "FAST_ZERO without WRITE_ZEROES, DF without structured replies, BLOCK_STATUS_PAYLOAD "
                    "without extended headers)")
    EVENTS = (ev.TransmissionStart,)

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.TransmissionStart) or event.transmission_flags is None:
            return
        f = session.sent_flags(event.transmission_flags)  # the server's flags, not a proxy's rewrite of them
        assert f is not None
        problems = []
        if not f & TF.HAS_FLAGS:
            problems.append("NBD_FLAG_HAS_FLAGS (bit 0) is clear but must always be set")
        if f & TF.SEND_FAST_ZERO and not f & TF.SEND_WRITE_ZEROES:
            problems.append("NBD_FLAG_SEND_FAST_ZERO set without NBD_FLAG_SEND_WRITE_ZEROES")
        if f & TF.SEND_DF and not event.structured_replies and not event.extended_headers:
            problems.append("NBD_FLAG_SEND_DF set although neither structured replies nor extended headers "
                            "were agreed")
        if f & TF.BLOCK_STATUS_PAYLOAD and not event.extended_headers:
            problems.append("NBD_FLAG_BLOCK_STATUS_PAYLOAD set without extended headers")
        for text in problems:
            self.flag(session, event, text, value=f)


class UnknownCommand(Rule):
    INFO = RuleInfo("unknown-command", "warning", "client", "Request types",
                    "a request type the spec does not define (the server should fail it with NBD_EINVAL)")
    EVENTS = (ev.Request,)

    @classmethod
    def subscribes(cls, event_type: type[ev.Event], command: int | None) -> bool:
        return issubclass(event_type, ev.Request) and command not in COMMANDS

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request) and event.command not in COMMANDS:
            self.flag(session, event, f"request type {event.command} is not defined", command=event.command,
                      cookie=event.cookie)
