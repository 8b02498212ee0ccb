"""What the disk saw, as data for pictures: one point per request (when, which session, command, offset,
length, latency, error, whether a finding names it), plus exact histograms and throughput
(``iohist``). Computed once per run and drawn by both the HTML report and the TUI's plot screen.

Memory is bounded. Points live in compact parallel arrays; past ``POINT_CAP`` ordinary points the
kept ones are thinned deterministically: request number k (counted from 0 over the run, in the order
requests arrive) is kept while ``spread(k) % stride == 0``, and each time the cap is passed the stride
doubles and the points that no longer qualify are dropped. ``spread`` scrambles k (Fibonacci hashing)
so that a periodic workload (a read then a write, over and over) does not lose one kind entirely, as
keeping every stride-th request would; a point kept at a stride is kept at every smaller one. A point
whose reply carried an error, that a finding names, or that never got a reply is always kept. Counts,
bytes, errors, histograms and throughput are counted on every request, so they stay exact whatever was
thinned. Times are seconds since ``t0`` (the engine's first packet)."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.iohist import SizeHistogram, Throughput, latency_bucket
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, ReplyType

if TYPE_CHECKING:
    from nbdscope.analysis.anomaly import Anomaly
    from nbdscope.analysis.engine import Engine, Result
    from nbdscope.analysis.session import Session

POINT_CAP = 1 << 15
"""Ordinary (unflagged) points kept at most; flagged points come on top."""
ERROR, FINDING, UNANSWERED = 1, 2, 4  # point flags
KEEP = ERROR | FINDING | UNANSWERED
RANGED = frozenset(int(c) for c in (Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES, Cmd.BLOCK_STATUS))
"""Commands whose offset and length name a range of the export (the I/O map and the size histograms)."""
_READ, _WRITE, _DISC = int(Cmd.READ), int(Cmd.WRITE), int(Cmd.DISC)
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / the golden ratio, odd


def spread(k: int) -> int:
    """Request number k scrambled into 32 bits: the high half of k times the golden ratio modulo 2^64."""
    return ((k * _GOLDEN) & 0xFFFFFFFFFFFFFFFF) >> 32
_OFFSET_DATA = int(ReplyType.OFFSET_DATA)


@dataclass(slots=True)
class _Flight:
    """A request still waiting for (the rest of) its reply."""

    session: int
    command: int
    offset: int
    length: int
    time: float
    k: int
    frame: int  # the request's
    last_frame: int  # the latest message of this request or its reply
    error: int = 0
    flags: int = 0
    latency: float = float("nan")


class IoModel:
    """The plot data of one run; fed request by request and reply by reply (``request``, ``reply``,
    ``flag``), read with ``as_json`` at any time (a live view reads it while it grows)."""

    def __init__(self, t0: float = 0.0) -> None:
        self.t0 = t0
        self.sessions: list[Session] = []
        self._index: dict[str, int] = {}
        # the points, one entry per kept request in completion order
        self.t, self.latency = array("d"), array("d")
        self.session_of, self.command = array("I"), array("H")  # commands are 16 bits on the wire
        self.offset, self.length = array("Q"), array("Q")
        self.error, self.k = array("I"), array("Q")
        self.flags = bytearray()
        self.stride = 1
        self.requests = 0  # requests that make points, ever
        self._plain = 0  # kept points without a KEEP flag
        self._flights: dict[tuple[int, int], _Flight] = {}
        self._touched: dict[int, _Flight] = {}  # per session: the request its latest message was about
        self._held: _Flight | None = None  # completed by the latest message: findings may still name it
        self.totals: dict[tuple[int, int], list[int]] = {}  # (session, command) -> [count, bytes, errors]
        self.sizes: dict[int, SizeHistogram] = {}
        self.latencies: dict[int, dict[int, int]] = {}
        self.throughput = Throughput()

    def session(self, s: Session) -> int:
        i = self._index.get(s.id)
        if i is None:
            i = self._index[s.id] = len(self.sessions)
            self.sessions.append(s)
        return i

    def _total(self, session: int, command: int) -> list[int]:
        row = self.totals.get((session, command))
        if row is None:
            row = self.totals[(session, command)] = [0, 0, 0]
        return row

    # ------------------------------------------------------------------ feeding

    def request(self, session: int, e: ev.Request, flagged: bool = False) -> None:
        self._settle()
        t = e.time - self.t0
        row = self._total(session, e.command)
        row[0] += 1
        if e.command == _WRITE:
            row[1] += e.payload_length
            if e.payload_length:
                self.throughput.add(t, e.payload_length, write=True)
        if e.command == _DISC:
            return
        length = e.effect_length if e.effect_length is not None else e.length
        if e.command in RANGED:
            hist = self.sizes.get(e.command)
            if hist is None:
                hist = self.sizes[e.command] = SizeHistogram()
            hist.add(e.offset, length)
        flight = _Flight(session, e.command, e.offset, length, t, self.requests, e.frame, e.frame,
                         flags=FINDING if flagged else 0)
        self.requests += 1
        old = self._flights.get((session, e.cookie))
        if old is not None:  # the cookie was reused while in flight: the first one gets no reply of its own
            self._keep(old, UNANSWERED)
        self._flights[(session, e.cookie)] = flight
        self._touched[session] = flight

    def reply(self, session: int, e: ev.SimpleReply | ev.ReplyChunk, flagged: bool = False) -> None:
        self._settle()
        if e.command is None:
            return
        code = self._count_reply(session, e)
        flight = self._flights.get((session, e.cookie))
        if flight is None:
            return
        flight.last_frame = e.frame
        self._touched[session] = flight
        if code and not flight.error:
            flight.error = code
        if flagged:
            flight.flags |= FINDING
        if e.completes:
            del self._flights[(session, e.cookie)]
            if e.failed or flight.error:
                flight.flags |= ERROR
            if e.latency_us is not None:
                flight.latency = e.latency_us
            self._held = flight

    def _count_reply(self, session: int, e: ev.SimpleReply | ev.ReplyChunk) -> int:
        """Errors, bytes read and latency of one reply message, counted as the Statistics addon counts
        them (so the plots' totals equal the report's command tables); the error code it carries."""
        assert e.command is not None
        row = self._total(session, e.command)
        nbytes = 0
        if type(e) is ev.SimpleReply:
            code = e.error
            if code:
                row[2] += 1
            if e.command == _READ and e.data_length:
                nbytes = e.data_length
        else:
            code = e.error or 0
            if e.reply_type == _OFFSET_DATA and e.data_length:  # type: ignore[union-attr]
                nbytes = e.data_length
            if e.completes and e.failed:
                row[2] += 1
        if nbytes:
            row[1] += nbytes
            self.throughput.add(e.time - self.t0, nbytes, write=False)
        if e.completes and e.latency_us is not None:
            buckets = self.latencies.setdefault(e.command, {})
            b = latency_bucket(e.latency_us)
            buckets[b] = buckets.get(b, 0) + 1
        return code

    def flag(self, session_id: str, frame: int) -> None:
        """A finding about this session at this frame: mark the request its latest message concerned if
        that message or the request is at this frame, else a request of the session still in flight that
        was sent at it (findings made when the capture ends)."""
        session = self._index.get(session_id)
        if session is None:
            return
        flight = self._touched.get(session)
        if flight is not None and frame in (flight.frame, flight.last_frame):
            flight.flags |= FINDING
            return
        for (s, _), f in self._flights.items():
            if s == session and f.frame == frame:
                f.flags |= FINDING
                return

    def finish(self) -> None:
        """The run is over: requests without a reply become points of their own."""
        self._settle()
        for flight in self._flights.values():
            self._keep(flight, UNANSWERED)
        self._flights.clear()
        self._touched.clear()

    # ------------------------------------------------------------------ thinning

    def _settle(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._keep(held, 0)

    def _keep(self, f: _Flight, extra: int) -> None:
        flags = f.flags | extra
        if not flags & KEEP and spread(f.k) % self.stride:
            return
        self._append(f, flags)
        if not flags & KEEP:
            self._plain += 1
            if self._plain > POINT_CAP:
                self._thin()

    def _append(self, f: _Flight, flags: int) -> None:
        self.t.append(f.time)
        self.latency.append(f.latency)
        self.session_of.append(f.session)
        self.command.append(f.command)
        self.offset.append(f.offset)
        self.length.append(min(f.length, (1 << 64) - 1))
        self.error.append(min(f.error, (1 << 32) - 1))
        self.k.append(f.k)
        self.flags.append(flags)

    def _thin(self) -> None:
        self.stride *= 2
        keep = [i for i in range(len(self.k)) if self.flags[i] & KEEP or not spread(self.k[i]) % self.stride]
        for name in ("t", "latency", "session_of", "command", "offset", "length", "error", "k"):
            old = getattr(self, name)
            setattr(self, name, array(old.typecode, (old[i] for i in keep)))
        self.flags = bytearray(self.flags[i] for i in keep)
        self._plain = sum(1 for f in self.flags if not f & KEEP)

    # ------------------------------------------------------------------ reading

    def as_json(self) -> dict[str, Any]:
        """The data the plots are drawn from (docs/REPORTS.md describes every field). In-flight requests
        appear as unanswered points, without changing the model."""
        from nbdscope.report.plotjson import model_json

        held = [(self._held, 0)] if self._held is not None else []
        return model_json(self, [*held, *((f, UNANSWERED) for f in self._flights.values())])


def command_name(command: int) -> str:
    return COMMANDS.name(command)


class IoMap(Addon):
    """The addon that feeds an ``IoModel`` from the engine's messages and findings."""

    def __init__(self) -> None:
        self.model = IoModel()
        self.engine: Engine | None = None
        self._t0_set = False

    def started(self, engine: Engine) -> None:
        self.engine = engine

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return event_type in (ev.Request, ev.SimpleReply, ev.ReplyChunk)

    def message(self, session: Session, e: ev.Event) -> None:
        if not self._t0_set and self.engine is not None:
            self.model.t0, self._t0_set = self.engine.t0(), True
        s = self.model.session(session)
        if type(e) is ev.Request:
            self.model.request(s, e)
        else:
            self.model.reply(s, e)  # type: ignore[arg-type]

    def finding(self, anomaly: Anomaly) -> None:
        self.model.flag(anomaly.session, anomaly.frame)

    def finished(self, result: Result) -> None:
        self.model.finish()
