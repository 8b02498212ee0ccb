"""The extents of block status chunks (spec NBD_REPLY_TYPE_BLOCK_STATUS, NBD_CMD_BLOCK_STATUS): lengths,
alignment, coverage of the request, NBD_CMD_FLAG_REQ_ONE, and the status values themselves.

Since 2025 (spec commit 6725f91) aligning extents to the minimum block size is a SHOULD, with the end
of an export whose size is itself unaligned excepted; the final extent may run past the request (and
nothing forbids it to run past the export's end), so neither is flagged."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import CommandFlag, ReplyType
from nbdscope.spec.metacontexts import BASE_ALLOCATION

_STATUS32 = int(ReplyType.BLOCK_STATUS)  # the 64-bit form belongs to the extended-headers checks
MAX_EXTENTS = 1 << 20
_BASE_FLAGS = 0b11  # NBD_STATE_HOLE, NBD_STATE_ZERO
_MAX_LENGTH = 0xFFFFFFFF


def _c(name: str, requires: tuple[str, ...], summary: str, consequence: str, fix: str, example: str) -> Check:
    return Check(name, requires, summary, consequence=consequence, fix=fix, example=example)


class UnalignedExtent(Rule):
    INFO = RuleInfo("unaligned-extent", "warning", "server", "NBD_CMD_BLOCK_STATUS; NBD_REPLY_TYPE_BLOCK_STATUS",
                    "block status extents that break the chunk's shape: unaligned or zero lengths, no extent, "
                    "running past the request while more follow, REQ_ONE ignored, too many, or odd status values")
    CHECKS = (
        _c("length", ("cmd-block-status.11",), "extent length not a multiple of the advertised minimum block size",
           "clients that insist on the alignment fail: qemu-img before 4.0 stops with \"Could not read file "
           "metadata: Invalid argument\" (4.0's client works around it)",
           "server: round extents to the minimum block size; qemu-nbd since 2.12 reports the hole inside the "
           "last sector of a file whose size is not a multiple of 512 (the seed of this check)",
           "extent of 1000 bytes at offset 0 is not a multiple of the minimum block size 512"),
        _c("zero-length", ("reply-type-block-status.3",), "extent of length 0",
           "the client cannot make progress", "server: merge or drop empty extents",
           "extent 1 at offset 4096 has length 0 (must be nonzero)"),
        _c("no-extent", ("reply-type-block-status.1", "cmd-block-status.7"), "status chunk without any extent",
           "the client cannot make progress", "server: return at least one extent",
           "block status chunk for context 1 carries no extent"),
        _c("chunk-length", ("reply-type-block-status.1",), "status chunk length not 4 + a multiple of 8",
           "the client cannot split the chunk into descriptors", "server: send whole 8-byte descriptors",
           "block status chunk of 15 bytes is not 4 + a multiple of 8"),
        _c("overshoot", ("reply-type-block-status.6",), "an extent before the last reaches the end of the request",
           "extents after the requested range are meaningless to the client", "server: stop at the request's "
           "end; only the last extent may run past it",
           "extent 0 reaches 8192, the end of the requested range 0+4096, yet more extents follow"),
        _c("req-one-count", ("reply-type-block-status.4",), "more than one extent under NBD_CMD_FLAG_REQ_ONE",
           "the client asked for exactly one", "server: honour NBD_CMD_FLAG_REQ_ONE",
           "3 extents in one chunk although the request set NBD_CMD_FLAG_REQ_ONE"),
        _c("req-one-length", ("reply-type-block-status.5", "cmd-block-status.5"), "an extent longer than the "
           "request under NBD_CMD_FLAG_REQ_ONE", "the client may act on status it did not ask for",
           "server: clamp the single extent to the request's length",
           "with NBD_CMD_FLAG_REQ_ONE the extent of 8192 bytes exceeds the requested length 4096"),
        _c("too-many", ("reply-type-block-status.7", "cmd-block-status.6"), "more than 2^20 extents in one chunk",
           "clients bound their buffers at 8 MiB of descriptors", "server: truncate the reply at 2^20 extents",
           "block status chunk holds 1048577 extents (more than 2^20)"),
        _c("same-status", ("cmd-block-status.8",), "two consecutive extents with the same status",
           "the reply is longer than needed", "server: merge neighbouring extents of equal status",
           "extents 0 and 1 (offset 0 and 4096) have the same status 0x0"),
        _c("not-512", ("cmd-block-status.10",), "an inner extent whose length is not a multiple of 512",
           "many small extents amplify the reply beyond the request", "server: report at 512-byte granularity",
           "inner extent 1 of 100 bytes at offset 512 is not a multiple of 512"),
        _c("reserved-status", ("base-allocation.2",), "base:allocation status with bits other than HOLE and ZERO",
           "future clients may read meaning into the stray bits", "server: send only bits 0 and 1",
           "base:allocation extent at offset 0 has reserved status bits 0x4"),
    )
    EVENTS = (ev.ReplyChunk,)  # for any command: a status chunk may answer a request of another kind

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.ReplyChunk) or event.reply_type != _STATUS32:
            return
        if event.length < 4 or (event.length - 4) % 8:
            self.flag(session, event, f"block status chunk of {event.length} bytes is not 4 + a multiple of 8",
                      check="chunk-length", length=event.length, cookie=event.cookie)
            return
        count = (event.length - 4) // 8
        if count == 0:
            self.flag(session, event, f"block status chunk for context {event.context_id} carries no extent",
                      check="no-extent", cookie=event.cookie)
            return
        if count > MAX_EXTENTS:
            self.flag(session, event, f"block status chunk holds {count} extents (more than 2^20)", check="too-many",
                      count=count, cookie=event.cookie)
        if event.request_offset is None or event.request_length is None:
            return
        self._extents(session, event)

    def _extents(self, session: Session, event: ev.ReplyChunk) -> None:
        start, requested = event.request_offset or 0, event.request_length or 0
        block, size = session.min_block or 1, session.size
        req_one = bool((event.request_flags or 0) & CommandFlag.REQ_ONE)
        aligned_request = start % block == 0 and requested % block == 0
        extents, offset, said = event.extents, start, set()
        for index, (length, status) in enumerate(extents):
            last = index == len(extents) - 1 and not event.extents_truncated
            end = offset + length
            if length == 0:
                self.flag(session, event, f"extent {index} at offset {offset} has length 0 (must be nonzero)",
                          check="zero-length", offset=offset, cookie=event.cookie)
            at_unaligned_end = size is not None and size % block and end >= size
            if block > 1 and length % block and aligned_request and not at_unaligned_end and "length" not in said:
                said.add("length")
                self.flag(session, event, f"extent of {length} bytes at offset {offset} is not a multiple of the "
                          f"minimum block size {block}", check="length", offset=offset, length=length,
                          min_block=block, cookie=event.cookie, context=event.context)
            if 0 < index and not last and length % 512 and "not-512" not in said and "length" not in said:
                said.add("not-512")
                self.flag(session, event, f"inner extent {index} of {length} bytes at offset {offset} is not a "
                          "multiple of 512", check="not-512", offset=offset, length=length, cookie=event.cookie)
            if not last and end - start >= requested and "overshoot" not in said:
                said.add("overshoot")
                self.flag(session, event, f"extent {index} reaches {end}, the end of the requested range "
                          f"{start}+{requested}, yet more extents follow", check="overshoot", offset=offset,
                          length=length, cookie=event.cookie)
            if req_one and length > requested:
                self.flag(session, event, f"with NBD_CMD_FLAG_REQ_ONE the extent of {length} bytes exceeds the "
                          f"requested length {requested}", check="req-one-length", length=length,
                          cookie=event.cookie)
            if index and status == extents[index - 1][1] and extents[index - 1][0] + length <= _MAX_LENGTH \
                    and "same-status" not in said:
                said.add("same-status")
                self.flag(session, event, f"extents {index - 1} and {index} (offset {offset - extents[index - 1][0]} "
                          f"and {offset}) have the same status {status:#x}", check="same-status", cookie=event.cookie)
            if event.context == BASE_ALLOCATION and status & ~_BASE_FLAGS and "reserved" not in said:
                said.add("reserved")
                self.flag(session, event, f"base:allocation extent at offset {offset} has reserved status bits "
                          f"{status & ~_BASE_FLAGS:#x}", check="reserved-status", offset=offset, status=status,
                          cookie=event.cookie)
            offset = end
        if req_one and len(extents) > 1:
            self.flag(session, event, f"{len(extents)} extents in one chunk although the request set "
                      "NBD_CMD_FLAG_REQ_ONE", check="req-one-count", count=len(extents), cookie=event.cookie)
