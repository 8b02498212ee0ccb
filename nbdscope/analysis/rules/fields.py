"""Rules on flag fields and enumerated values (spec "Flag fields", "Request types")."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import (
    CLIENT_FLAGS,
    COMMAND_FLAGS,
    COMMANDS,
    HANDSHAKE_FLAGS,
    TRANSMISSION_FLAGS,
    TransmissionFlag,
)

TF = TransmissionFlag


def _bits(mask: int) -> str:
    return ", ".join(str(n) for n in range(64) if mask >> n & 1)


class ReservedBitsSet(Rule):
    INFO = RuleInfo("reserved-bits-set", "error", "either", "Flag fields",
                    "a bit the spec does not define is set in a flags field")
    CHECKS = (
        Check("command-flags", ("cmdflags.1",), "a request sets a command flag bit the spec does not define",
              blame="client", consequence="the server should refuse the request with EINVAL; an older or newer "
                                          "server may give the bit a meaning the client did not intend",
              fix="client: send only the defined command flags (bits 0-5)",
              example="NBD_CMD_READ sets undefined command flag bit(s) 9"),
        Check("handshake-flags", ("hflags.3",), "the newstyle greeting sets a handshake flag bit the spec does "
              "not define", blame="server", consequence="clients are told of a capability that does not exist; "
                                                        "some drop the connection",
              fix="server: set only FIXED_NEWSTYLE and NO_ZEROES", example="handshake flags 0x0007 set undefined "
                                                                           "bit(s) 2"),
        Check("oldstyle-flags", ("hflags.5",), "the oldstyle greeting sets any of the upper 16 flag bits",
              blame="server", consequence="those bits are where newstyle handshake flags would sit; oldstyle has "
                                          "none, so a client may misread them",
              fix="server: leave the upper 16 bits of the oldstyle flags field zero",
              example="oldstyle greeting sets the reserved upper 16 flag bits (0x0001)"),
        Check("client-flags", ("cflags.4",), "the client flags set a bit the spec does not define",
              blame="client", consequence="the server must drop the connection",
              fix="client: send only C_FIXED_NEWSTYLE and C_NO_ZEROES",
              example="client flags 0x0000000b set undefined bit(s) 3; the server must then drop the connection"),
        Check("transmission-flags", (), "the transmission flags set a bit no published version defines",
              severity="info", blame="server",
              consequence="clients ignore unknown bits; a bit from a later revision of the spec is no fault",
              fix="none needed unless the bit is a mistake of the server (compare with its documentation)",
              example="transmission flags 0x8001 set undefined bit(s) 15 (clients ignore them)"),
    )
    # reply-chunk flags: undefined bits may be hints clients must ignore, so bad-reply-chunk.undefined-flag
    # reports them as a hint only
    EVENTS = (ev.ServerGreeting, ev.ClientFlags, ev.Request, ev.OptionReply, ev.ExportNameReply)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request):  # the common events first
            if COMMAND_FLAGS.reserved(event.flags):
                self.flag(session, event, f"{COMMANDS.name(event.command)} sets undefined command flag bit(s) "
                          f"{_bits(COMMAND_FLAGS.reserved(event.flags))}", check="command-flags", value=event.flags,
                          cookie=event.cookie)
        elif isinstance(event, ev.ServerGreeting):
            if event.handshake_flags is not None and HANDSHAKE_FLAGS.reserved(event.handshake_flags):
                self.flag(session, event, f"handshake flags {event.handshake_flags:#06x} set undefined bit(s) "
                          f"{_bits(HANDSHAKE_FLAGS.reserved(event.handshake_flags))}", check="handshake-flags",
                          value=event.handshake_flags)
            if event.oldstyle_high_flags:
                self.flag(session, event, f"oldstyle greeting sets the reserved upper 16 flag bits "
                          f"({event.oldstyle_high_flags:#06x})", check="oldstyle-flags",
                          value=event.oldstyle_high_flags)
            self._transmission(session, event, event.transmission_flags)
        elif isinstance(event, ev.ClientFlags):
            if CLIENT_FLAGS.reserved(event.flags):
                self.flag(session, event, f"client flags {event.flags:#010x} set undefined bit(s) "
                          f"{_bits(CLIENT_FLAGS.reserved(event.flags))}; the server must then drop the connection",
                          check="client-flags", value=event.flags)
        elif not isinstance(event, ev.TransmissionStart):
            self._transmission(session, event, getattr(event, "transmission_flags", None))

    def _transmission(self, session: Session, event: ev.Event, received: int | None) -> None:
        tflags = session.sent_flags(received)  # as the server sent them, not as a proxy rewrote them
        if tflags is not None and TRANSMISSION_FLAGS.reserved(tflags):
            self.flag(session, event, f"transmission flags {tflags:#06x} set undefined bit(s) "
                      f"{_bits(TRANSMISSION_FLAGS.reserved(tflags))} (clients ignore them)",
                      check="transmission-flags", value=tflags)


class TransmissionFlagsInvalid(Rule):
    INFO = RuleInfo("transmission-flags-invalid", "error", "server", "Transmission flags",
                    "transmission flags that contradict themselves or the negotiation (HAS_FLAGS clear, "
                    "FAST_ZERO without WRITE_ZEROES, DF without structured replies, BLOCK_STATUS_PAYLOAD "
                    "without extended headers)")
    CHECKS = (
        Check("has-flags-clear", ("tflags.3",), "NBD_FLAG_HAS_FLAGS (bit 0) is clear",
              consequence="old clients read a clear bit 0 as 'no flags at all' and ignore every other bit",
              fix="server: always set bit 0", example="NBD_FLAG_HAS_FLAGS (bit 0) is clear but must always be set"),
        Check("fast-zero-without-write-zeroes", ("tflags.11",), "SEND_FAST_ZERO set while SEND_WRITE_ZEROES is "
              "clear", consequence="a client may send fast-zero requests with a command the server does not offer",
              fix="server: clear bit 11 whenever bit 6 is clear",
              example="NBD_FLAG_SEND_FAST_ZERO set without NBD_FLAG_SEND_WRITE_ZEROES"),
        Check("df-without-structured", ("tflags.6",), "SEND_DF set although structured replies were not agreed",
              consequence="with simple replies there is nothing to fragment; a client may set DF the server "
                          "cannot honour", fix="server: set bit 7 only after NBD_OPT_STRUCTURED_REPLY succeeded",
              example="NBD_FLAG_SEND_DF set although neither structured replies nor extended headers were agreed"),
    )
    EVENTS = (ev.TransmissionStart,)

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.TransmissionStart) or event.transmission_flags is None:
            return
        f = session.sent_flags(event.transmission_flags)  # the server's flags, not a proxy's rewrite of them
        assert f is not None
        problems = []
        if not f & TF.HAS_FLAGS:
            problems.append(("has-flags-clear", "NBD_FLAG_HAS_FLAGS (bit 0) is clear but must always be set"))
        if f & TF.SEND_FAST_ZERO and not f & TF.SEND_WRITE_ZEROES:
            problems.append(("fast-zero-without-write-zeroes",
                             "NBD_FLAG_SEND_FAST_ZERO set without NBD_FLAG_SEND_WRITE_ZEROES"))
        # None: the capture began after the handshake, so what was agreed is unknown
        if f & TF.SEND_DF and event.structured_replies is False and not event.extended_headers:
            problems.append(("df-without-structured", "NBD_FLAG_SEND_DF set although neither structured replies "
                             "nor extended headers were agreed"))
        # NBD_FLAG_BLOCK_STATUS_PAYLOAD without extended headers: extended-headers.block-status-payload-unagreed
        for check, text in problems:
            self.flag(session, event, text, check=check, value=f)


class UnknownCommand(Rule):
    INFO = RuleInfo("unknown-command", "error", "client", "Request types",
                    "a request type the spec does not define (the server should fail it with NBD_EINVAL)")
    CHECKS = (
        Check("undefined", ("baseline.4",), "a request type the spec does not define",
              consequence="no handshake can have agreed on it: the server should fail it with NBD_EINVAL, and one "
                          "that gives the number another meaning may act on it",
              fix="client: send only defined commands, and extensions only after negotiating them",
              example="request type 42 is not defined"),
    )
    EVENTS = (ev.Request,)

    @classmethod
    def subscribes(cls, event_type: type[ev.Event], command: int | None) -> bool:
        return issubclass(event_type, ev.Request) and command not in COMMANDS

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request) and event.command not in COMMANDS:
            self.flag(session, event, f"request type {event.command} is not defined", check="undefined",
                      command=event.command, cookie=event.cookie)
