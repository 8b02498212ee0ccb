"""``analyze --brief``: one line per finding, one per session, then the totals, in the manner of
``tshark -z expert`` and ruff's one-line diagnostics, for reading at a glance and for grep and sort.

Finding lines are ``frame  time  severity  rule.check  blame  session  message``, columns aligned
across the run, the message cut to the width with an ellipsis (never wrapped: one finding is one
line); then a ``fix`` line per check that fired, saying what to do. The frame names its file when the
run read several."""

from __future__ import annotations

from typing import IO

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Result
from nbdscope.analysis.session import Session
from nbdscope.report.clock import Clock
from nbdscope.report.text import frame_of
from nbdscope.report.wording import cut, plural
from nbdscope.selection import Selection

SEVERITIES = ("error", "warning", "info")
GAP = "  "
MIN_MESSAGE = 24  # characters of the message kept even when the other columns fill the width


def _aligned(rows: list[list[str]], width: int | None = None) -> list[str]:
    """Rows of cells as lines, every column but the last padded to its widest cell; with ``width``, the
    last cell is cut so that the line fits."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lead = sum(widths) + len(GAP) * len(widths)  # where the last column begins
    room = max(MIN_MESSAGE, width - lead) if width is not None else None
    return [(GAP.join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + GAP
             + (cut(r[-1], room) if room is not None else r[-1])).rstrip() for r in rows]


def _counts(findings: list[Anomaly]) -> str:
    """``1 error, 2 warnings``: the findings by severity, worst first (``no findings`` for none)."""
    parts = [plural(n, s) for s in SEVERITIES if (n := sum(a.severity == s for a in findings))]
    return ", ".join(parts) or "no findings"


def _outcome(s: Session) -> str:
    """How the session went, in a few words: the handshake's outcome when it never reached transmission,
    else how it ended."""
    tls = ""
    if s.tls:  # whether what follows STARTTLS was seen at all decides how far to trust the rest
        tls = (s.tls_summary() or "TLS, encrypted (no --tls-keylog)") + "; "
    if s.outcome is not None:
        return tls + s.outcome.summary
    return tls + (f"transmission, disconnect {s.disconnect}" if s.transmission
                  else f"handshake, disconnect {s.disconnect}")


def finding_lines(result: Result, findings: list[Anomaly], width: int | None, clock: Clock) -> list[str]:
    rows = [[frame_of(a, result), clock.text(a.time + result.t0), a.severity, a.check or a.rule, a.blame,
             a.session or "-", a.message] for a in findings]
    return _aligned(rows, width)


def advice_lines(findings: list[Anomaly], width: int | None) -> list[str]:
    """One ``fix`` line per check that fired, in order of first appearance: the catalogue's "what to do"
    for it (``nbdscope rules CHECK`` explains it in full), so the brief answers what to do as well."""
    from nbdscope.report.ruledoc import check_entries

    entries = check_entries()
    rows, seen = [], set()
    for a in findings:
        entry = entries.get(a.check or "")
        if entry is None or entry.id in seen or not entry.check.fix:
            continue
        seen.add(entry.id)
        rows.append(["fix", entry.id, entry.check.fix])
    return _aligned(rows, width)


def session_lines(result: Result) -> list[str]:
    by_session: dict[str, list[Anomaly]] = {}
    for a in result.anomalies:
        by_session.setdefault(a.session, []).append(a)
    rows = [[s.id, f"{s.client} -> {s.server}", "export " + ("?" if s.export_name is None else repr(s.export_name)),
             _outcome(s), plural(s.messages, "message"), _counts(by_session.get(s.id, []))] for s in result.sessions]
    return _aligned(rows)


def totals_line(result: Result, selection: Selection | None, shown: int | None = None) -> str:
    found = result.anomalies
    line = f"{plural(len(result.sessions), 'session')}, {plural(len(found), 'anomaly')}"
    if found:
        line += f" ({_counts(found)})"
    if shown is not None:
        line += f", {shown} on the messages -Y keeps"
    if selection is not None and selection.active:
        line += f", {sum(result.silenced.values())} silenced by {selection.describe()}"
    if result.problems:
        line += f", {plural(len(result.problems), 'capture problem')}"
    return line


def render(result: Result, out: IO[str], width: int | None, clock: Clock, selection: Selection | None = None,
           findings: list[Anomaly] | None = None) -> None:
    """``findings``: the ones to list (those -Y kept), when not all of them; ``width`` None: never cut."""
    listed = result.anomalies if findings is None else findings
    lines = [*finding_lines(result, listed, width, clock), *advice_lines(listed, width), *session_lines(result),
             totals_line(result, selection, None if findings is None else len(findings))]
    out.write("\n".join(lines) + "\n")
