"""Per-command counters with bounded memory, and the addon that keeps them.

Latency samples are kept in a fixed-size reservoir so a capture with millions of
requests costs the same memory as one with thousands; the maximum stays exact.
Percentiles have one definition (nearest rank, ``percentile``) for every view.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nbdscope.analysis.addons import Addon
from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd, ReplyType

if TYPE_CHECKING:
    from nbdscope.analysis.session import Session

RESERVOIR = 1 << 16
_WRITE, _READ, _OFFSET_DATA = int(Cmd.WRITE), int(Cmd.READ), int(ReplyType.OFFSET_DATA)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile, the definition most latency tools print."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100)
    return sorted_values[int(rank) - 1]


@dataclass
class CommandStats:
    count: int = 0
    bytes: int = 0
    errors: int = 0
    samples: array[float] = field(default_factory=lambda: array("d"))
    seen: int = 0
    max_latency: float = 0.0
    _rng: random.Random = field(default_factory=lambda: random.Random(0x4E4244))

    def add_latency(self, us: float) -> None:
        self.seen += 1
        self.max_latency = max(self.max_latency, us)
        if len(self.samples) < RESERVOIR:
            self.samples.append(us)
        else:
            j = self._rng.randrange(self.seen)
            if j < RESERVOIR:
                self.samples[j] = us

    def add_latencies(self, values: Sequence[float]) -> None:
        """``add_latency`` for each value in order (the compiled path hands them over in batches)."""
        room = RESERVOIR - len(self.samples)
        head = values[:room] if room > 0 else values[:0]
        if len(head):
            self.samples.extend(head)
            self.seen += len(head)
            self.max_latency = max(self.max_latency, max(head))
        for us in values[len(head):]:
            self.add_latency(us)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"count": self.count, "bytes": self.bytes, "errors": self.errors}
        if self.seen:
            ordered = sorted(self.samples)
            out["latency_us"] = {"p50": round(percentile(ordered, 50), 1), "p99": round(percentile(ordered, 99), 1),
                                 "max": round(self.max_latency, 1)}
        else:
            out["latency_us"] = None
        return out


class Statistics(Addon):
    """Counts requests, bytes moved, errors and latencies per command into each session's ``commands``."""

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return event_type in (ev.Request, ev.SimpleReply, ev.ReplyChunk)

    def message(self, session: Session, e: ev.Event) -> None:
        cls = type(e)
        if cls is ev.Request:
            stats = _stats(session, e.command)  # type: ignore[attr-defined]
            stats.count += 1
            if e.command == _WRITE:  # type: ignore[attr-defined]
                stats.bytes += e.payload_length  # type: ignore[attr-defined]
        elif cls is ev.SimpleReply:
            if e.command is not None:  # type: ignore[attr-defined]
                stats = _stats(session, e.command)  # type: ignore[attr-defined]
                if e.error:  # type: ignore[attr-defined]
                    stats.errors += 1
                if e.command == _READ and e.data_length:  # type: ignore[attr-defined]
                    stats.bytes += e.data_length  # type: ignore[attr-defined]
                if e.latency_us is not None:  # type: ignore[attr-defined]
                    stats.add_latency(e.latency_us)  # type: ignore[attr-defined]
        else:
            self._chunk(session, e)  # type: ignore[arg-type]

    def _chunk(self, session: Session, e: ev.ReplyChunk) -> None:
        if e.command is None:
            return
        stats = _stats(session, e.command)
        if e.reply_type == _OFFSET_DATA and e.data_length:
            stats.bytes += e.data_length
        if e.completes:
            if e.failed:  # the decoder says so on the last chunk when any chunk of the reply was an error
                stats.errors += 1
            if e.latency_us is not None:
                stats.add_latency(e.latency_us)


def _stats(session: Session, command: int) -> CommandStats:
    stats = session.commands.get(command)
    if stats is None:
        stats = session.commands[command] = CommandStats()
    return stats
