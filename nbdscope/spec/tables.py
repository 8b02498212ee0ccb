"""Typed containers for spec constants, so every layer reads names, meanings and
sections from one place instead of spelling them itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True, slots=True)
class Code:
    """One enumerated value of a protocol field (an option, a command, ...)."""

    value: int
    name: str
    meaning: str
    section: str


@dataclass(frozen=True, slots=True)
class Bit:
    """One bit of a flags field."""

    number: int
    name: str
    meaning: str
    section: str

    @property
    def mask(self) -> int:
        return 1 << self.number


class CodeTable:
    """Value table for one enumerated field; unknown values still get a printable name."""

    def __init__(self, field: str, prefix: str, enum: type[IntEnum],
                 docs: dict[int, tuple[str, str]]) -> None:
        self.field = field
        self.prefix = prefix
        self.enum = enum
        self.codes: tuple[Code, ...] = tuple(
            Code(int(m), prefix + m.name, docs[m][0], docs[m][1]) for m in enum
        )
        self._by_value = {c.value: c for c in self.codes}
        self._by_name = {c.name: c for c in self.codes}
        missing = set(docs) - set(self._by_value)
        if missing:  # pragma: no cover - guards the tables themselves
            raise ValueError(f"{field}: docs for undefined values {missing}")

    def get(self, value: int) -> Code | None:
        return self._by_value.get(value)

    def name(self, value: int) -> str:
        code = self._by_value.get(value)
        return code.name if code else f"{self.prefix}UNKNOWN({value})"

    def by_name(self, name: str) -> Code | None:
        return self._by_name.get(name) or self._by_name.get(self.prefix + name)

    def __contains__(self, value: object) -> bool:
        return value in self._by_value

    def __iter__(self) -> Iterator[Code]:
        return iter(self.codes)


class FlagField:
    """A flags field with its defined bits; everything else in it is reserved."""

    def __init__(self, field: str, width: int, bits: tuple[Bit, ...]) -> None:
        self.field = field
        self.width = width
        self.bits = bits
        self.defined_mask = 0
        for b in bits:
            self.defined_mask |= b.mask
        self._by_number = {b.number: b for b in bits}
        self._by_name = {b.name: b for b in bits}
        self._described: dict[int, dict[str, object]] = {}

    def bit(self, number: int) -> Bit | None:
        return self._by_number.get(number)

    def by_name(self, name: str) -> Bit | None:
        """Look a bit up by its spec name, with or without the common prefix."""
        if name in self._by_name:
            return self._by_name[name]
        return next((b for b in self.bits if b.name.endswith("_" + name)), None)

    def reserved(self, value: int) -> int:
        """The set bits of ``value`` that the spec does not define."""
        return value & ~self.defined_mask

    def names(self, value: int) -> list[str]:
        """Names of the set bits; undefined set bits appear as ``bit N``."""
        out = [b.name for b in self.bits if value & b.mask]
        out += [f"bit {n}" for n in range(self.width) if value & (1 << n) and n not in self._by_number]
        return out

    def describe(self, value: int) -> dict[str, object]:
        """The JSON shape of docs/CONTRACT.md: every defined bit, plus any undefined set bit.

        Cached per value (a flags field takes few distinct values); callers must not
        modify the result."""
        cached = self._described.get(value)
        if cached is not None:
            return cached
        if len(self._described) < 4096:
            cached = self._described[value] = self._describe(value)
            return cached
        return self._describe(value)

    def _describe(self, value: int) -> dict[str, object]:
        bits: list[dict[str, object]] = [
            {"bit": b.number, "name": b.name, "set": bool(value & b.mask)} for b in self.bits
        ]
        for n in range(self.width):
            if value & (1 << n) and n not in self._by_number:
                bits.append({"bit": n, "name": None, "set": True, "reserved": True})
        return {"value": value, "bits": bits}
