"""Per-command counters with bounded memory.

Latency samples are kept in a fixed-size reservoir so a capture with millions of
requests costs the same memory as one with thousands; the maximum stays exact.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field

RESERVOIR = 1 << 16


def _percentile(sorted_values: list[float], q: float) -> float:
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
    samples: array = field(default_factory=lambda: array("d"))
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

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"count": self.count, "bytes": self.bytes, "errors": self.errors}
        if self.seen:
            ordered = sorted(self.samples)
            out["latency_us"] = {"p50": round(_percentile(ordered, 50), 1), "p99": round(_percentile(ordered, 99), 1),
                                 "max": round(self.max_latency, 1)}
        else:
            out["latency_us"] = None
        return out
