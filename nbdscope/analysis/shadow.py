"""A model of what one connection has written, to catch reads that return
something else (spec "Ordering of messages and writes": a read sent after a
write's reply must see that write).

Contents are kept as a digest per sector, not as data, and the number of
sectors is capped, so memory stays small whatever the capture size."""

from __future__ import annotations

from dataclasses import dataclass, field

SECTOR = 512
MAX_SECTORS = 1 << 20  # ~100 MB at most; past it new sectors are not tracked


def _digest(chunk: bytes) -> int:
    return hash(chunk)


ZERO_DIGEST = _digest(bytes(SECTOR))


@dataclass
class ShadowDisk:
    sectors: dict[int, tuple[int, int]] = field(default_factory=dict)  # sector -> (digest, frame written)
    full: bool = False

    def write(self, offset: int, data: bytes, frame: int) -> None:
        """Record completed write data; sectors only partly covered become unknown."""
        self._forget_partial(offset, len(data))
        first = -(-offset // SECTOR)
        for sector in range(first, (offset + len(data)) // SECTOR):
            start = sector * SECTOR - offset
            self._set(sector, _digest(data[start:start + SECTOR]), frame)

    def zero(self, offset: int, length: int, frame: int) -> None:
        self._forget_partial(offset, length)
        for sector in range(-(-offset // SECTOR), (offset + length) // SECTOR):
            self._set(sector, ZERO_DIGEST, frame)

    def forget(self, offset: int, length: int) -> None:
        for sector in range(offset // SECTOR, -(-(offset + length) // SECTOR)):
            self.sectors.pop(sector, None)

    def compare(self, offset: int, data: bytes | None, length: int,
                skip: list[tuple[int, int]]) -> tuple[int, int] | None:
        """First known sector that the read disagrees with: (sector offset, frame of the write).

        ``data`` None means the range reads as zeroes (a hole chunk). Sectors
        overlapping a range in ``skip`` (writes racing with the read) are ignored."""
        for sector in range(-(-offset // SECTOR), (offset + length) // SECTOR):
            known = self.sectors.get(sector)
            if known is None:
                continue
            lo = sector * SECTOR
            if any(a < lo + SECTOR and lo < b for a, b in skip):
                continue
            if data is None:
                got = ZERO_DIGEST
            else:
                start = lo - offset
                got = _digest(data[start:start + SECTOR])
            if got != known[0]:
                return lo, known[1]
        return None

    def _forget_partial(self, offset: int, length: int) -> None:
        if offset % SECTOR:
            self.sectors.pop(offset // SECTOR, None)
        if (offset + length) % SECTOR:
            self.sectors.pop((offset + length) // SECTOR, None)

    def _set(self, sector: int, digest: int, frame: int) -> None:
        if len(self.sectors) >= MAX_SECTORS and sector not in self.sectors:
            self.full = True
            return
        self.sectors[sector] = (digest, frame)
