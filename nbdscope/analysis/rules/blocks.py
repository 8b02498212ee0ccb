"""Size constraint rules (spec "Size constraints", NBD_INFO_BLOCK_SIZE): the advertised block sizes
themselves, export size, request alignment and bounds, payload limits, and servers that hang up on
requests the spec asks them to survive.

A client is bound by advertised block sizes only when its NBD_OPT_GO asked for NBD_INFO_BLOCK_SIZE:
the server may send that information unasked, but may then not assume the client honours it."""

from __future__ import annotations

from typing import Any

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.extents import UnalignedExtent  # lived here before; kept importable from here
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, Info, Rep
from nbdscope.spec.codes import DEFAULT_MAX_PAYLOAD, MAX_MIN_BLOCK, MIN_PREFERRED_BLOCK

# commands whose offset and length address the export
RANGED = frozenset({Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS})
_EFFECT_ONLY = frozenset({int(Cmd.TRIM), int(Cmd.WRITE_ZEROES), int(Cmd.CACHE)})  # no payload either way
_MIB = 1 << 20
__all__ = ["BlockSizeInvalid", "PayloadTooLarge", "RequestBeyondExport", "SizeNotBlockMultiple", "UnalignedExtent",
           "UnalignedRequest"]


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _length(event: ev.Request) -> int:
    return event.effect_length if event.effect_length is not None else event.length


def _c(name: str, requires: tuple[str, ...], summary: str, consequence: str, fix: str, example: str,
       **kw: object) -> Check:
    return Check(name, requires, summary, consequence=consequence, fix=fix, example=example, **kw)  # type: ignore[arg-type]


class SizeNotBlockMultiple(Rule):
    INFO = RuleInfo("size-not-block-multiple", "warning", "server", "Size constraints",
                    "export size is not a multiple of the advertised minimum block size, so its tail is "
                    "unreachable; qemu-img 7.2 aborts on such exports")
    CHECKS = (_c("size", ("sizes.12",), "export size not a multiple of the advertised minimum block size",
                 "the last bytes cannot be addressed by aligned requests; qemu-img 7.2 aborts",
                 "server: advertise a size rounded to the minimum block size, or a smaller minimum",
                 "export size 1000 is not a multiple of the minimum block size 512 (last 488 bytes cannot be "
                 "addressed)"),)
    EVENTS = (ev.TransmissionStart,)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.TransmissionStart) and event.min_block and event.size is not None \
                and event.size % event.min_block:
            self.flag(session, event, f"export size {event.size} is not a multiple of the minimum block size "
                      f"{event.min_block} (last {event.size % event.min_block} bytes cannot be addressed)",
                      check="size", size=event.size, min_block=event.min_block)


class BlockSizeInvalid(Rule):
    INFO = RuleInfo("block-size-invalid", "error", "server", "Size constraints; NBD_INFO_BLOCK_SIZE",
                    "advertised block sizes that break the spec's relations: powers of two, minimum at most 64 KiB, "
                    "preferred at least max(minimum, 512), maximum payload at least the preferred size")
    CHECKS = (
        _c("minimum", ("sizes.10", "sizes.11"), "minimum block size not a power of two, or above 64 KiB",
           "clients cannot align requests to it", "server: advertise 1, 512, 4096 ... up to 65536",
           "NBD_INFO_BLOCK_SIZE minimum 1000 is not a power of two no larger than 65536"),
        _c("preferred", ("sizes.13",), "preferred block size not a power of two at least max(minimum, 512)",
           "clients sizing I/O by it misalign", "server: advertise a power of two >= 512 and >= the minimum",
           "NBD_INFO_BLOCK_SIZE preferred 256 is not a power of two at least max(512, 512)"),
        _c("maximum", ("sizes.14",), "maximum payload below the preferred block size",
           "a client cannot send one preferred-size request", "server: raise the maximum payload",
           "NBD_INFO_BLOCK_SIZE maximum payload 2048 is smaller than the preferred block size 4096"),
        _c("small-maximum", ("sizes.15",), "maximum payload below 1 MiB on an export at least that large",
           "large transfers split into many small requests", "server: allow payloads of 1 MiB or more",
           "maximum payload 65536 is below 1 MiB although the export has 1073741824 bytes"),
    )
    EVENTS = (ev.OptionReply, ev.TransmissionStart)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.TransmissionStart):
            mx, size = event.max_payload, event.size
            if mx is not None and size is not None and mx < _MIB <= size and event.how == "go":
                self.flag(session, event, f"maximum payload {mx} is below 1 MiB although the export has {size} "
                          "bytes", check="small-maximum", max_payload=mx, size=size)
            return
        if not isinstance(event, ev.OptionReply) or event.reply != Rep.INFO or event.info_type != Info.BLOCK_SIZE \
                or event.min_block is None or event.problem:
            return
        mn, pref, mx = event.min_block, event.preferred_block or 0, event.max_payload or 0
        values: dict[str, Any] = {"min_block": mn, "preferred_block": pref, "max_payload": mx}
        if not _pow2(mn) or mn > MAX_MIN_BLOCK:
            self.flag(session, event, f"NBD_INFO_BLOCK_SIZE minimum {mn} is not a power of two no larger than "
                      f"{MAX_MIN_BLOCK}", check="minimum", **values)
        if not _pow2(pref) or pref < max(mn, MIN_PREFERRED_BLOCK):
            self.flag(session, event, f"NBD_INFO_BLOCK_SIZE preferred {pref} is not a power of two at least "
                      f"max({mn}, 512)", check="preferred", **values)
        if mx < pref:
            self.flag(session, event, f"NBD_INFO_BLOCK_SIZE maximum payload {mx} is smaller than the preferred "
                      f"block size {pref}", check="maximum", **values)


class _ServerShouldRefuse(Rule):
    """Requests the client should not have sent, which the server then should have refused
    with NBD_EINVAL ("Size constraints": the server SHOULD report NBD_EINVAL)."""

    EVENTS = (ev.Request,)
    FOR_COMMANDS = RANGED

    def __init__(self) -> None:
        super().__init__()
        self.bad: dict[tuple[str, int], str] = {}

    def remember(self, session: Session, event: ev.Request, what: str) -> None:
        """Judge the reply to this request when it completes (whatever command it then answers:
        cookies may be reused)."""
        self.bad[(session.id, event.cookie)] = what
        session.await_reply(event.cookie, self.check_reply)

    def check_reply(self, session: Session, event: ev.Reply) -> None:
        what = self.bad.pop((session.id, event.cookie), None)
        if what and not event.failed:
            self.flag(session, event, f"server reported success for the {what} (it should fail it with "
                      "NBD_EINVAL)", check="accepted", blame="server", cookie=event.cookie)


_ACCEPTED = ("server reported success for a request it should have failed with NBD_EINVAL",
             "the client learns nothing of its mistake; unaligned writes may be read-modify-written or lost",
             "server: fail such requests with NBD_EINVAL")


class UnalignedRequest(_ServerShouldRefuse):
    INFO = RuleInfo("unaligned-request", "error", "client", "Size constraints",
                    "request offset or length is not a multiple of the minimum block size the client asked for")
    CHECKS = (
        _c("unaligned", ("sizes.5", "sizes.20"), "request not aligned to the minimum block size the client "
           "requested with NBD_INFO_BLOCK_SIZE", "servers relying on alignment (O_DIRECT) fail or corrupt data",
           "client: round requests to the minimum block size it was given (or do not ask for block sizes)",
           "NBD_CMD_READ offset 1 and length 100 not a multiple of the minimum block size 512"),
        _c("accepted", ("sizes.23",), *_ACCEPTED,
           example="server reported success for the unaligned NBD_CMD_READ (it should fail it with NBD_EINVAL)"),
    )

    def message(self, session: Session, event: ev.Event) -> None:
        block = session.min_block
        if not isinstance(event, ev.Request) or not block or block == 1 or event.command not in RANGED \
                or not session.block_size_requested:
            return  # a client that did not ask for block sizes is not bound by ones sent unasked
        length = _length(event)
        bad = [f"{name} {value}" for name, value in (("offset", event.offset), ("length", length)) if value % block]
        if bad:
            self.flag(session, event, f"{COMMANDS.name(event.command)} {' and '.join(bad)} not a multiple of the "
                      f"minimum block size {block}", check="unaligned", offset=event.offset, length=length,
                      min_block=block, cookie=event.cookie)
            self.remember(session, event, f"unaligned {COMMANDS.name(event.command)}")


class RequestBeyondExport(_ServerShouldRefuse):
    INFO = RuleInfo("request-beyond-export", "error", "client", "Size constraints",
                    "request offset + length runs past the end of the export")
    CHECKS = (
        _c("beyond", ("sizes.22",), "request runs past the end of the export",
           "the server must fail it; a lax server may touch memory or files past the export",
           "client: clamp requests to the export size", "NBD_CMD_READ of 4096 bytes at offset 1048576 ends at "
           "1052672, past the export size 1048576"),
        _c("accepted", ("sizes.23",), *_ACCEPTED,
           example="server reported success for the NBD_CMD_READ past the end of the export (it should fail it "
                   "with NBD_EINVAL)"),
    )

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request) or session.size is None or event.command not in RANGED:
            return
        length = _length(event)
        if event.offset + length > session.size:
            self.flag(session, event, f"{COMMANDS.name(event.command)} of {length} bytes at offset {event.offset} "
                      f"ends at {event.offset + length}, past the export size {session.size}", check="beyond",
                      offset=event.offset, length=length, size=session.size, cookie=event.cookie)
            self.remember(session, event, f"{COMMANDS.name(event.command)} past the end of the export")


class PayloadTooLarge(Rule):
    INFO = RuleInfo("payload-too-large", "error", "client", "Size constraints",
                    "READ or WRITE payload longer than the maximum payload the client asked for (or 32 MiB), and "
                    "servers that hang up on requests the spec asks them to survive")
    CHECKS = (
        _c("exceeds", ("sizes.5", "sizes.17"), "READ/WRITE payload above the maximum payload the client "
           "requested with NBD_INFO_BLOCK_SIZE", "the server may fail the request or hang up",
           "client: split transfers at the advertised maximum payload",
           "NBD_CMD_WRITE of 65536 bytes exceeds the advertised maximum payload 4096"),
        _c("over-default", ("sizes.7",), "READ/WRITE payload above 32 MiB without a larger agreed maximum",
           "servers need only accept 32 MiB; many hang up on more", "client: split transfers at 32 MiB",
           "NBD_CMD_READ of 67108864 bytes exceeds 32 MiB, the largest payload every server must accept"),
        _c("dos-hangup", ("sizes.16",), "server hung up on a request whose payload is at most 32 MiB",
           "portable clients that stay within 32 MiB are cut off", "server: accept payloads up to 32 MiB, or "
           "fail them with an error", "server closed the connection with NBD_CMD_WRITE of 65536 bytes (cookie "
           "0x1) unanswered"),
        _c("effect-hangup", ("sizes.19",), "server hung up on a TRIM/WRITE_ZEROES/CACHE longer than the maximum "
           "payload", "clients zeroing or trimming whole exports are cut off",
           "server: answer NBD_EOVERFLOW or NBD_EINVAL instead of hanging up",
           "server closed the connection with NBD_CMD_TRIM of 1073741824 bytes (cookie 0x1) unanswered"),
        _c("unrequested-hangup", ("sizes.9",), "server hung up on a request outside block sizes the client "
           "never asked for", "a client that negotiated no sizing is cut off instead of getting an error",
           "server: fail out-of-constraint requests cleanly (NBD_EINVAL) when sizing was not negotiated",
           "server closed the connection with NBD_CMD_READ of 100 bytes at offset 1 (cookie 0x1) unanswered"),
    )
    EVENTS = (ev.Request, ev.ConnectionEnd)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ConnectionEnd):
            self._hangup(session, event)
            return
        if not isinstance(event, ev.Request) or event.command not in (Cmd.READ, Cmd.WRITE):
            return
        carries = event.command == Cmd.WRITE or (not session.structured_replies and not session.extended_headers)
        if not carries:
            return
        limit = session.max_payload if session.block_size_requested else None
        if limit is not None and event.length > limit:
            self.flag(session, event, f"{COMMANDS.name(event.command)} of {event.length} bytes exceeds the "
                      f"advertised maximum payload {limit}", check="exceeds", length=event.length,
                      max_payload=limit, cookie=event.cookie)
        elif limit is None and event.length > DEFAULT_MAX_PAYLOAD:
            self.flag(session, event, f"{COMMANDS.name(event.command)} of {event.length} bytes exceeds 32 MiB, the "
                      "largest payload every server must accept", check="over-default", length=event.length,
                      cookie=event.cookie)

    def _hangup(self, session: Session, event: ev.ConnectionEnd) -> None:
        """The server closed first with requests in flight: was one the spec asks it to survive?"""
        if event.soft or event.by != "s2c" or not session.reliable or session.hidden:
            return
        for cookie, command, _frame in event.in_flight:
            flight = session.in_flight.get(cookie)
            if flight is None:
                continue
            req = flight.request
            what = f"{COMMANDS.name(command)} of {_length(req)} bytes at offset {req.offset} (cookie {cookie:#x})"
            check = self._survivable(session, req)
            if check:
                self.flag(session, event, f"server closed the connection with {what} unanswered", check=check,
                          blame="server", cookie=cookie)
                return

    @staticmethod
    def _survivable(session: Session, req: ev.Request) -> str | None:
        mx, block, length = session.max_payload, session.min_block, _length(req)
        if req.command in _EFFECT_ONLY and mx is not None and length > mx:
            return "effect-hangup"
        if req.command in (Cmd.READ, Cmd.WRITE) and mx is not None and mx < length <= DEFAULT_MAX_PAYLOAD:
            return "dos-hangup"
        if not session.block_size_requested and block and block > 1 and req.command in RANGED \
                and (req.offset % block or length % block):
            return "unrequested-hangup"
        return None
