"""What an NBD_OPT_INFO / NBD_OPT_GO answer says, compared: a GO repeating an INFO must get the same
answer (the option-protocol rule; the block sizes' own relations are block-size-invalid's)."""

from __future__ import annotations

from collections.abc import Iterator

InfoValues = tuple[object, ...]
"""One NBD_REP_INFO's values: size, transmission flags, three block sizes, name, description."""
LABELS = ("size", "transmission flags", "minimum block", "preferred block", "maximum payload", "name",
          "description")


def differences(info: dict[int, InfoValues], go: dict[int, InfoValues]) -> Iterator[tuple[int, str]]:
    """Per information type that differs, what differs ("size 0 vs 4096; ..."); the order of replies is free."""
    empty = (None,) * len(LABELS)
    for itype in sorted(set(info) | set(go)):
        a, b = info.get(itype), go.get(itype)
        if a != b:
            yield itype, "; ".join(f"{label} {x!r} vs {y!r}" for label, x, y in
                                   zip(LABELS, a or empty, b or empty, strict=True) if x != y)
