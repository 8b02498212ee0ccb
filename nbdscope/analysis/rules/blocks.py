"""Size constraint rules: export size, request alignment and bounds, payload
limits, and block status extents (spec "Size constraints", NBD_CMD_BLOCK_STATUS)."""

from __future__ import annotations

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, CommandFlag
from nbdscope.spec.codes import DEFAULT_MAX_PAYLOAD, STATUS_REPLY_TYPES

# commands whose offset and length address the export
RANGED = frozenset({Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS})


class SizeNotBlockMultiple(Rule):
    INFO = RuleInfo("size-not-block-multiple", "warning", "server", "Size constraints",
                    "export size is not a multiple of the advertised minimum block size, so its tail is "
                    "unreachable; qemu-img 7.2 aborts on such exports")
    EVENTS = (ev.TransmissionStart,)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.TransmissionStart) and event.min_block and event.size is not None \
                and event.size % event.min_block:
            self.flag(session, event, f"export size {event.size} is not a multiple of the minimum block size "
                      f"{event.min_block} (last {event.size % event.min_block} bytes cannot be addressed)",
                      size=event.size, min_block=event.min_block)


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
                      "NBD_EINVAL)", blame="server", severity="warning", cookie=event.cookie)


class UnalignedRequest(_ServerShouldRefuse):
    INFO = RuleInfo("unaligned-request", "error", "client", "Size constraints",
                    "request offset or length is not a multiple of the advertised minimum block size")
    def message(self, session: Session, event: ev.Event) -> None:
        block = session.min_block
        if not isinstance(event, ev.Request) or not block or block == 1 or event.command not in RANGED:
            return
        length = event.effect_length if event.effect_length is not None else event.length
        bad = [f"{name} {value}" for name, value in (("offset", event.offset), ("length", length)) if value % block]
        if bad:
            self.flag(session, event, f"{COMMANDS.name(event.command)} {' and '.join(bad)} not a multiple of the "
                      f"minimum block size {block}", offset=event.offset, length=length, min_block=block,
                      cookie=event.cookie)
            self.remember(session, event, f"unaligned {COMMANDS.name(event.command)}")


class RequestBeyondExport(_ServerShouldRefuse):
    INFO = RuleInfo("request-beyond-export", "error", "client", "Size constraints",
                    "request offset + length runs past the end of the export")
    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request) or session.size is None or event.command not in RANGED:
            return
        length = event.effect_length if event.effect_length is not None else event.length
        if event.offset + length > session.size:
            self.flag(session, event, f"{COMMANDS.name(event.command)} of {length} bytes at offset {event.offset} "
                      f"ends at {event.offset + length}, past the export size {session.size}",
                      offset=event.offset, length=length, size=session.size, cookie=event.cookie)
            self.remember(session, event, f"{COMMANDS.name(event.command)} past the end of the export")


class PayloadTooLarge(Rule):
    INFO = RuleInfo("payload-too-large", "error", "client", "Size constraints",
                    "READ or WRITE payload longer than the advertised maximum payload (or the 32 MiB default)")
    EVENTS = (ev.Request,)
    FOR_COMMANDS = frozenset({Cmd.READ, Cmd.WRITE})

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.Request):
            return
        carries = event.command == Cmd.WRITE or (event.command == Cmd.READ and not session.structured_replies
                                                 and not session.extended_headers)
        if not carries:
            return
        if session.max_payload is not None:
            if event.length > session.max_payload:
                self.flag(session, event, f"{COMMANDS.name(event.command)} of {event.length} bytes exceeds the "
                          f"advertised maximum payload {session.max_payload}", length=event.length,
                          max_payload=session.max_payload, cookie=event.cookie)
        elif event.length > DEFAULT_MAX_PAYLOAD:
            self.flag(session, event, f"{COMMANDS.name(event.command)} of {event.length} bytes exceeds 32 MiB, the "
                      "largest payload a server without advertised limits must accept", severity="warning",
                      length=event.length, cookie=event.cookie)


class UnalignedExtent(Rule):
    INFO = RuleInfo("unaligned-extent", "warning", "server", "Size constraints; NBD_CMD_BLOCK_STATUS",
                    "block status extents not aligned to the minimum block size, of length zero, running past "
                    "the request or the export, or making no progress")
    EVENTS = (ev.ReplyChunk,)  # for any command: a status chunk may answer a request of another kind

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.ReplyChunk) or event.reply_type not in STATUS_REPLY_TYPES:
            return
        if event.request_offset is None or event.request_length is None:
            return
        if not event.extents:
            self.flag(session, event, "block status chunk carries no extent, so the reply makes no progress",
                      severity="error", cookie=event.cookie)
            return
        start, requested = event.request_offset, event.request_length
        block, size = session.min_block or 1, session.size
        req_one = event.request_flags is not None and bool(event.request_flags & CommandFlag.REQ_ONE)
        offset = start
        reported_alignment = False
        for index, (length, _status) in enumerate(event.extents):
            last = index == len(event.extents) - 1
            if length == 0:
                self.flag(session, event, f"extent {index} at offset {offset} has length 0 (must be nonzero)",
                          severity="error", offset=offset, cookie=event.cookie)
            ends_at_unaligned_eof = size is not None and offset + length == size and size % block
            if block > 1 and not reported_alignment and (length % block or offset % block) \
                    and not (ends_at_unaligned_eof and offset % block == 0):
                what = f"extent of {length} bytes at offset {offset}"
                why = (f"is not a multiple of the minimum block size {block}" if length % block else
                       f"starts at an offset that is not a multiple of the minimum block size {block}")
                self.flag(session, event, f"{what} {why}", offset=offset, length=length, min_block=block,
                          cookie=event.cookie, context=event.context)
                reported_alignment = True
            if not last and offset + length - start >= requested:
                self.flag(session, event, f"extent {index} reaches {offset + length}, the end of the requested "
                          f"range {start}+{requested}, yet more extents follow", severity="error",
                          offset=offset, length=length, cookie=event.cookie)
            if req_one and length > requested:
                self.flag(session, event, f"with NBD_CMD_FLAG_REQ_ONE the extent of {length} bytes exceeds the "
                          f"requested length {requested}", severity="error", length=length, cookie=event.cookie)
            if size is not None and offset + length > size:
                self.flag(session, event, f"extent of {length} bytes at offset {offset} runs past the export "
                          f"size {size}", severity="error", offset=offset, length=length, size=size,
                          cookie=event.cookie)
            offset += length
        if req_one and len(event.extents) > 1:
            self.flag(session, event, f"{len(event.extents)} extents in one chunk although the request set "
                      "NBD_CMD_FLAG_REQ_ONE", severity="error", cookie=event.cookie)
