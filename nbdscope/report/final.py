"""The reports written once a run ends, each an addon: the JSON report (docs/CONTRACT.md) and the
text report (sessions, findings, what was silenced; --brief, --messages). The HTML report is
report/html.py."""

from __future__ import annotations

import json
import os
import shutil
from typing import IO, TYPE_CHECKING

from nbdscope import __version__
from nbdscope.analysis.addons import Addon
from nbdscope.report.clock import Clock
from nbdscope.report.facts import session_object, summary_object
from nbdscope.report.timeline import legend_line

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine, Result
    from nbdscope.report.outputs import FindingsShown
    from nbdscope.selection import Selection


def json_report(inputs: list[str], result: Result, selection: Selection | None = None,
                utc_offset: int | None = None) -> dict[str, object]:
    """The whole run as one JSON object (docs/CONTRACT.md, ``analyze --format json``). With an active
    selection (--select/--ignore, nbdscope.toml) it says which, and how many findings it silenced per check.
    ``utc_offset``: the capture's own zone (Engine.utc_offset), for the ISO 8601 times of the summary."""
    out: dict[str, object] = {
        "nbdscope": __version__,
        "inputs": inputs,
        "sessions": [session_object(s, result.t0) for s in result.sessions],
        "anomalies": [a.as_json(bool(result.inputs), result.t0) for a in result.anomalies],
        "capture_problems": [{"input": p.source, "frame": p.frame, "message": p.message} for p in result.problems],
        "summary": summary_object(result, inputs, utc_offset),
    }
    if selection is not None and selection.active:
        out["selection"] = {"select": list(selection.select), "ignore": list(selection.ignore),
                            "origin": selection.origin}
        out["silenced"] = dict(result.silenced)
    return out


class JsonReport(Addon):
    """Writes the JSON report when the run ends."""

    def __init__(self, out: IO[str], inputs: list[str], selection: Selection | None = None) -> None:
        self.out, self.inputs, self.selection = out, inputs, selection
        self.engine: Engine | None = None

    def started(self, engine: Engine) -> None:
        self.engine = engine  # for its utc_offset, known only once the input's header was read

    def finished(self, result: Result) -> None:
        offset = self.engine.utc_offset if self.engine is not None else None
        json.dump(json_report(self.inputs, result, self.selection, offset), self.out, indent=2)
        self.out.write("\n")


class TextReport(Addon):
    """Writes the text report (sessions, findings, what was silenced) when the run ends, at the width of
    the terminal (``COLUMNS``; 80 for a pipe). ``timeline`` holds the ``--messages`` lines written
    meanwhile, which go out after the report's heading; ``brief`` writes one line per finding and per
    session instead (report/brief.py); ``bits`` shows flags bit by bit; ``time`` is the base of its times."""

    def __init__(self, out: IO[str], inputs: list[str], selection: Selection | None = None, *,
                 timeline: IO[str] | None = None, brief: bool = False, bits: bool = False,
                 time: str = "rel", shown: FindingsShown | None = None) -> None:
        self.out, self.inputs, self.selection = out, inputs, selection
        self.timeline, self.brief, self.bits, self.shown = timeline, brief, bits, shown
        self.clock = Clock(time)
        self.engine: Engine | None = None

    def started(self, engine: Engine) -> None:
        self.engine = engine

    def finished(self, result: Result) -> None:
        from rich.console import Console

        from nbdscope.report import brief, text
        from nbdscope.report.wording import text_width

        self.clock.origin = result.t0
        self.clock.utc_offset = self.engine.utc_offset if self.engine is not None else None
        width = text_width()
        if self.brief:
            if self.timeline is not None:
                self.out.write(text.heading(result, self.inputs) + "\n")
                self._timeline(result)
            findings = self.shown.of(result.anomalies) if self.shown is not None else None
            # into a pipe or file, with no COLUMNS asked for, lines stay whole: they are for grep and sort there
            fits = bool(os.environ.get("COLUMNS")) or self.out.isatty()
            brief.render(result, self.out, width if fits else None, self.clock, self.selection, findings)
            return
        console = Console(file=self.out, width=width, highlight=False)
        text.render(result, self.inputs, console, self.selection, clock=self.clock, bits=self.bits,
                    after_heading=(lambda: self._timeline(result)) if self.timeline is not None else None)

    def _timeline(self, result: Result) -> None:
        """The legend (every session once, all known by now), then the timeline lines kept meanwhile."""
        assert self.timeline is not None
        for session in result.sessions:
            self.out.write(legend_line(session) + "\n")
        self.timeline.seek(0)
        shutil.copyfileobj(self.timeline, self.out)
        self.out.write("\n")
        self.out.flush()

