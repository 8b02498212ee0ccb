"""A model of each export's contents as the capture shows them, to catch reads
that return something other than acknowledged writes (spec "Ordering of
messages and writes", NBD_FLAG_CAN_MULTI_CONN).

Contents are a 64-bit digest per 512-byte sector, never the data: about 150
bytes of memory per sector written, i.e. roughly 300 MB per GiB of export
touched, capped at MAX_SECTORS (past the cap, new sectors go untracked and
the report says so)."""

from __future__ import annotations

from dataclasses import dataclass, field

SECTOR = 512
MAX_SECTORS = 1 << 20


def digest(chunk: bytes) -> int:
    return hash(chunk)


ZERO_DIGEST = digest(bytes(SECTOR))


@dataclass(slots=True)
class Sector:
    digest: int
    writer: str  # session that wrote it
    write_frame: int
    acked: int  # event sequence number of the write's successful reply
    shared: int | None = None  # sequence number from which every connection must see it (flush/FUA)
    flush_frame: int | None = None


@dataclass
class ShadowDisk:
    sectors: dict[int, Sector] = field(default_factory=dict)
    full: bool = False

    def store(self, offset: int, data: bytes | None, length: int, entry: Sector) -> list[int]:
        """Record acknowledged contents (``data`` None: zeroes); returns the sectors set."""
        self.forget_partial(offset, length)
        done = []
        for n in range(-(-offset // SECTOR), (offset + length) // SECTOR):
            if data is None:
                d = ZERO_DIGEST
            else:
                start = n * SECTOR - offset
                d = digest(data[start:start + SECTOR])
            if len(self.sectors) >= MAX_SECTORS and n not in self.sectors:
                self.full = True
                continue
            self.sectors[n] = Sector(d, entry.writer, entry.write_frame, entry.acked, entry.shared,
                                     entry.flush_frame)
            done.append(n)
        return done

    def forget(self, offset: int, length: int) -> None:
        for n in range(offset // SECTOR, -(-(offset + length) // SECTOR)):
            self.sectors.pop(n, None)

    def forget_partial(self, offset: int, length: int) -> None:
        if offset % SECTOR:
            self.sectors.pop(offset // SECTOR, None)
        if (offset + length) % SECTOR:
            self.sectors.pop((offset + length) // SECTOR, None)

    def covered(self, offset: int, length: int) -> range:
        return range(-(-offset // SECTOR), (offset + length) // SECTOR)
