"""Addons: everything that consumes the engine's one stream of events.

Rules, statistics, the shadow disk, the JSONL and pcapng writers, the reports and
the TUI's store are all addons, in the manner of mitmproxy: each is an object that
defines the hooks it cares about, and the engine calls only the hooks a class
actually defines. The engine, not the addon, catches what a hook raises: the addon
is then reported once as an ``internal-error`` finding and detached, and the others
go on. Adding an output or a rule is one module with one class, and one line where
the run's addons are listed (``nbdscope/pipeline.py`` for outputs,
``nbdscope/analysis/rules/__init__.py`` for rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbdscope.analysis.anomaly import Anomaly
    from nbdscope.analysis.engine import Engine, Result
    from nbdscope.analysis.session import Session
    from nbdscope.decoder import events as ev
    from nbdscope.vocab import CaptureProblem, InputStart, StreamItem

HOOKS = ("started", "input", "opened", "stream", "message", "finding", "problem", "ending", "finished")
"""Hook names, in the order a run calls them: ``started`` once, then per stream item ``stream`` (the raw item,
after the decoder has seen it), ``opened`` when a connection is first seen (before its items),
``message`` per decoded event and ``finding`` per anomaly as they happen,
``problem`` per damaged-input report, ``input`` when the next file of a run over several
begins; ``ending`` once when the input is exhausted (rules may still report
then), and ``finished`` once with the whole result."""


class Addon:
    """Base of every addon. Subclasses override the hooks they need; nothing is required.

    ``NEEDS`` names what the decoder must do for this addon beyond its default: ``"data"`` (hand over
    read and write payloads as PayloadData events), ``"headers"`` (keep each message's wire header on its
    event), ``"payload-ranges"`` (track where read and write data lie, for redaction). The engine asks the
    decoder for the union of its addons' needs, so nobody pays for what no addon wants. An addon may set
    its own ``NEEDS`` when they depend on how it was configured."""

    NEEDS: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return type(self).__name__

    def started(self, engine: Engine) -> None:
        """Before the first item: the addon may keep the engine (for ``engine.t0()``, say)."""

    def opened(self, session: Session) -> None:
        """A new session (connection) was seen: its endpoints, input and first frame are known, nothing else."""

    def stream(self, item: StreamItem) -> None:
        """A stream item, after the decoder has turned it into events (for writers of raw packets)."""

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        """Whether ``message`` is to be called for events of this type (and command, for requests and
        replies); asked once per pair, so a rule that needs few events costs nothing on the others."""
        return True

    def message(self, session: Session, event: ev.Event) -> None:
        """One decoded message of one session, in stream order."""

    def wants_read_data(self, session: Session, offset: int, length: int) -> bool:
        """For addons that need payloads: whether the read data at this disk offset is worth gathering
        (asked when its reply header is decoded). An addon that needs data and does not override this
        gets every read's data."""
        return True

    def finding(self, anomaly: Anomaly) -> None:
        """An anomaly, as soon as a rule reports it."""

    def problem(self, problem: CaptureProblem) -> None:
        """The input is damaged here; what was read before it is kept."""

    def input(self, start: InputStart) -> None:
        """A run over several files (a rotating capture set) goes on in the next one; frame numbers from
        here on are that file's."""

    def ending(self, sessions: list[Session]) -> None:
        """The input is exhausted and every session closed; findings may still be reported."""

    def finished(self, result: Result) -> None:
        """After the last item: every session, finding and problem of the run."""


def defines(addon: Addon, hook: str) -> bool:
    """Whether the addon's class overrides a hook (the engine skips the others entirely)."""
    return getattr(type(addon), hook) is not getattr(Addon, hook)
