"""Meaning of block-status flags per metadata context (spec "Metadata querying",
"base:allocation metadata context"; qemu's own namespaces as qemu documents
them in docs/interop/nbd.txt)."""

from __future__ import annotations

from nbdscope.spec.tables import Bit, FlagField

BASE_ALLOCATION = "base:allocation"
QEMU_DIRTY_BITMAP_PREFIX = "qemu:dirty-bitmap:"
QEMU_ALLOCATION_DEPTH = "qemu:allocation-depth"

BASE_ALLOCATION_FLAGS = FlagField("base:allocation", 32, (
    Bit(0, "NBD_STATE_HOLE", "range is not allocated (a hole)", "base:allocation metadata context"),
    Bit(1, "NBD_STATE_ZERO", "range reads as zeroes", "base:allocation metadata context"),
))

DIRTY_BITMAP_FLAGS = FlagField("qemu:dirty-bitmap", 32, (
    Bit(0, "NBD_STATE_DIRTY", "range changed since the bitmap was started", "qemu namespace: qemu:dirty-bitmap"),
))


def describe_status(context: str | None, status: int) -> str:
    """A short human reading of one extent's status under its context."""
    if context == BASE_ALLOCATION:
        names = [n.removeprefix("NBD_STATE_").lower() for n in BASE_ALLOCATION_FLAGS.names(status)]
        return ",".join(names) or "data"
    if context and context.startswith(QEMU_DIRTY_BITMAP_PREFIX):
        return "dirty" if status & 1 else "clean"
    if context == QEMU_ALLOCATION_DEPTH:
        # the status is a depth, not flags: 0 unallocated, 1 this layer, N the (N-1)th backing file
        return "unallocated" if status == 0 else f"depth {status}"
    return f"0x{status:x}"


def status_field(context: str | None) -> FlagField | None:
    if context == BASE_ALLOCATION:
        return BASE_ALLOCATION_FLAGS
    if context and context.startswith(QEMU_DIRTY_BITMAP_PREFIX):
        return DIRTY_BITMAP_FLAGS
    return None
