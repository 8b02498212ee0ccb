"""Which findings a run reports: ``--select`` and ``--ignore`` (and the config file's ``select`` and
``ignore``), by rule id or by check id.

A finding is matched by the most specific selector naming it: a check id (``rule.check``) beats its
rule's id, so ``--ignore bad-reply-chunk --select bad-reply-chunk.error-zero`` keeps only that check,
and ``--select bad-reply-chunk --ignore bad-reply-chunk.error-zero`` keeps the rule without it. At the
same specificity ignore wins. Without any ``select`` every rule is selected. nbdscope's own failures
(``internal-error``) are always reported. Silenced findings reach no output and no ``--fail-on``;
the engine counts them per check (``Result.silenced``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nbdscope.analysis.anomaly import INTERNAL_ERROR, Anomaly


class SelectionError(ValueError):
    """A selector naming no rule or check; the message is one line."""


def split_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated options and comma lists as one tuple of ids (blanks dropped, order kept)."""
    out: list[str] = []
    for value in values:
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(out))


def validate(ids: Iterable[str], where: str) -> tuple[str, ...]:
    """The ids, or SelectionError naming the first unknown one and where it came from."""
    from nbdscope.report.ruledoc import known_ids

    known = known_ids()
    ids = tuple(ids)
    for ident in ids:
        if ident not in known:
            rule = ident.partition(".")[0]
            hint = (f"rule {rule} declares no such check" if rule in known else "no such rule or check") \
                + "; `nbdscope rules` lists them"
            raise SelectionError(f"{where} {ident!r}: {hint}")
    return ids


@dataclass(frozen=True, slots=True)
class Selection:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    origin: str = ""  # where the ids came from, for the report (e.g. "nbdscope.toml, --ignore")

    @property
    def active(self) -> bool:
        return bool(self.select or self.ignore)

    def keeps(self, a: Anomaly) -> bool:
        if a.rule == INTERNAL_ERROR.id:
            return True
        for ident in (a.check, a.rule):  # the most specific selector decides
            if not ident:
                continue
            if ident in self.ignore:
                return False
            if ident in self.select:
                return True
        return not self.select

    def describe(self) -> str:
        parts = []
        if self.select:
            parts.append("select " + ",".join(self.select))
        if self.ignore:
            parts.append("ignore " + ",".join(self.ignore))
        text = "; ".join(parts)
        return f"{text} (from {self.origin})" if self.origin else text


def silenced_key(a: Anomaly) -> str:
    """What a silenced finding is counted under: its check, or its rule when it names none."""
    return a.check or a.rule
