"""What an NBD_OPT_INFO / NBD_OPT_GO answer says, compared (a GO repeating an INFO must get the same
answer) and checked (NBD_INFO_BLOCK_SIZE values that cannot be), for the option-protocol rule."""

from __future__ import annotations

from collections.abc import Iterator

InfoValues = tuple[object, ...]
"""One NBD_REP_INFO's values: size, transmission flags, three block sizes, name, description."""
LABELS = ("size", "transmission flags", "minimum block", "preferred block", "maximum payload", "name",
          "description")
MAX_MIN_BLOCK = 1 << 16


def differences(info: dict[int, InfoValues], go: dict[int, InfoValues]) -> Iterator[tuple[int, str]]:
    """Per information type that differs, what differs ("size 0 vs 4096; ..."); the order of replies is free."""
    empty = (None,) * len(LABELS)
    for itype in sorted(set(info) | set(go)):
        a, b = info.get(itype), go.get(itype)
        if a != b:
            yield itype, "; ".join(f"{label} {x!r} vs {y!r}" for label, x, y in
                                   zip(LABELS, a or empty, b or empty, strict=True) if x != y)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def block_size_problems(mn: int, pref: int, mx: int) -> list[str]:
    problems = []
    if not _pow2(mn) or mn > MAX_MIN_BLOCK:
        problems.append(f"minimum block size {mn} must be a power of two no larger than {MAX_MIN_BLOCK}")
    if not _pow2(pref) or pref < max(mn, 512):
        problems.append(f"preferred block size {pref} must be a power of two at least max(minimum, 512)")
    if mx < pref:
        problems.append(f"maximum payload {mx} is smaller than the preferred block size {pref}")
    return problems
