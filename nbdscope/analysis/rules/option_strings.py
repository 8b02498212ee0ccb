"""What the spec's "Conventions" ask of every string in option haggling (export names, queries,
context names, descriptions, error messages): no NUL, at most 4096 bytes (256 advised), and for
metadata context names valid UTF-8 of the form ``namespace:rest``.

The decoder hands strings over as text with undecodable bytes written as ``\\xNN``
(``backslashreplace``), so byte lengths and UTF-8 validity are recovered from that form here."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ESCAPED = re.compile(r"\\x[0-9a-f]{2}")  # one byte that was not UTF-8, as backslashreplace writes it


@dataclass(frozen=True, slots=True)
class StringFacts:
    nbytes: int  # length on the wire
    nul_at: int | None  # index of the first NUL character, if any
    valid_utf8: bool


def facts(text: str) -> StringFacts:
    escaped = len(_ESCAPED.findall(text))
    nbytes = len(text.encode("utf-8")) - 3 * escaped  # each "\xNN" (4 characters) was one byte
    nul = text.find("\x00")
    return StringFacts(nbytes=nbytes, nul_at=nul if nul >= 0 else None, valid_utf8=escaped == 0)


def has_namespace(name: str) -> bool:
    """A query or context name starts with a non-empty namespace and a colon."""
    return name.find(":") > 0


def shown(text: str, limit: int = 40) -> str:
    """A string for a one-line message: quoted, NULs visible, long ones cut."""
    out = repr(text[:limit])
    return out + f"... ({len(text)} characters)" if len(text) > limit else out
