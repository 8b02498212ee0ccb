"""What the rules on refused requests share: the error a whole reply ended with, and whether the
request it answers was one a correct server has no reason to refuse."""

from __future__ import annotations

from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMAND_FLAGS, Cmd, CommandFlag, TransmissionFlag
from nbdscope.spec.codes import DEFAULT_MAX_PAYLOAD  # what a client may assume when no maximum was advertised

TF = TransmissionFlag

_FLAG_NEEDS = {int(CommandFlag.FUA): TF.SEND_FUA, int(CommandFlag.DF): TF.SEND_DF,
               int(CommandFlag.FAST_ZERO): TF.SEND_FAST_ZERO}
_FLAG_FOR = {int(CommandFlag.NO_HOLE): {Cmd.WRITE_ZEROES}, int(CommandFlag.DF): {Cmd.READ},
             int(CommandFlag.REQ_ONE): {Cmd.BLOCK_STATUS}, int(CommandFlag.FAST_ZERO): {Cmd.WRITE_ZEROES}}
_SIZED = frozenset({Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.CACHE, Cmd.BLOCK_STATUS})


class ReplyErrors:
    """Remembers the error value of error chunks until the reply they belong to completes."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], int] = {}

    def completed(self, session: Session, event: ev.Reply) -> int | None:
        """For the message that completes a reply: its error (0 for success); None before that."""
        key = (session.id, event.cookie)
        if isinstance(event, ev.ReplyChunk) and event.error:
            self._pending.setdefault(key, event.error)
        if not event.completes:
            return None
        if isinstance(event, ev.SimpleReply):
            return event.error
        error = self._pending.pop(key, 0)
        return error or (1 << 32 if event.failed else 0)  # failed without an error value we saw: "some error"


def blameless(session: Session, reply: ev.Reply) -> bool:
    """True when nothing in the request gave the server a reason to refuse it: inside the export,
    aligned, within the payload limit, and with only documented, advertised flags for its command."""
    cmd, flags = reply.command, reply.request_flags
    offset, length = reply.request_offset, reply.request_length
    if cmd is None or flags is None or offset is None or length is None or session.lost_sync:
        return False
    if COMMAND_FLAGS.reserved(flags) or flags & int(CommandFlag.PAYLOAD_LEN):
        return False
    for flag, need in _FLAG_NEEDS.items():
        if flags & flag and not session.has_flag(need):
            return False
    for flag, valid in _FLAG_FOR.items():
        if flags & flag and cmd not in valid:
            return False
    if cmd == Cmd.FLUSH:
        return offset == 0 and length == 0
    if cmd not in _SIZED:
        return True
    if length == 0 or (session.size is not None and offset + length > session.size):
        return False
    if session.min_block and (offset % session.min_block or length % session.min_block):
        return False
    return length <= (session.max_payload or DEFAULT_MAX_PAYLOAD)
