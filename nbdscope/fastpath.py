"""The compiled per-message path: when a connection is in a steady state, its common messages
are taken by nbdscope/_fastpath.c in one native loop instead of going through Python.

``analyze`` over a classic pcap spends most of its time on messages whose only effect is
bookkeeping: a READ request and its simple reply that no rule has anything to say about. For
those, the Scanner in C passes over the record and TCP headers, decodes the request or
reply, keeps the requests in flight, the per-command counters and the message count, and
skips the read data. A connection is handed to it ("adopted") only when the decoder's, the
session's and the rules' state allows it (``Accelerator._adoptable``) and only while every
addon that would hear such messages is one whose silence can be told from a few limits
(``QUIET``); the limits come from the session once, at adoption. The first message outside
them makes the Scanner give the connection back: ``Accelerator.release`` writes everything
into the Python objects as the pure-Python path would have left them (TCP halves, receive
buffers, the in-flight tables, sequence numbers, recent cookies, statistics), and the
message is decoded by Python from there. Python stays the reference and the fallback: with
NBDSCOPE_PURE=1, where the extension did not build, for pcapng, with an output that hears
every message (the TUI, --messages, JSONL over several files) or raw items (pcapng), or with
--redact, nothing is adopted and nothing changes. With --verify-data the Scanner takes reads
only while no write to their export has been acknowledged (until then the shadow disk holds
nothing a read could contradict), and never writes, whose data the shadow disk needs.
tests/golden/test_fastpath.py runs the shipped captures both ways and requires identical
outputs (test_fastpath_verify.py the --verify-data hand-back). The proxy's watcher drives the
same Accelerator with the tap's data records (fastpath_tap.py; tests/golden/test_fastpath_proxy.py).
"""

from __future__ import annotations

import itertools
import os
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from nbdscope.analysis.addons import defines
from nbdscope.analysis.rules.advertised import FlagNotAdvertised, WriteToReadOnly
from nbdscope.analysis.rules.blocks import PayloadTooLarge, RequestBeyondExport, UnalignedRequest
from nbdscope.analysis.rules.chunks import BadReplyChunk
from nbdscope.analysis.rules.data import StaleRead
from nbdscope.analysis.rules.errors import ErrorValue
from nbdscope.analysis.rules.extended import ExtendedHeaders
from nbdscope.analysis.rules.extents import UnalignedExtent
from nbdscope.analysis.rules.fields import ReservedBitsSet
from nbdscope.analysis.rules.framing import HardDisconnect
from nbdscope.analysis.rules.proxy import ProxyAction
from nbdscope.analysis.rules.refusals import AdvertisedRefused
from nbdscope.analysis.rules.replies import CookieReuse, ReplyKind, SimpleReplyToStructuredRead
from nbdscope.analysis.rules.request_fields import RequestFields
from nbdscope.analysis.rules.requests import DisconnectProtocol, ReadRequest
from nbdscope.analysis.session import Flight
from nbdscope.analysis.stats import Statistics, _stats
from nbdscope.capture.tcp import fast_key
from nbdscope.decoder import events as ev
from nbdscope.decoder.state import State
from nbdscope.fastpath_lines import templates
from nbdscope.report.outputs import JsonlLines, TimelineLines
from nbdscope.spec import Cmd, ReplyFlag, ReplyType, TransmissionFlag
from nbdscope.spec import magics as M
from nbdscope.spec.codes import DEFAULT_MAX_PAYLOAD, REQUEST_HEADER

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine
    from nbdscope.analysis.session import Session
    from nbdscope.capture.halves import Half
    from nbdscope.capture.linklayer import FastLayout
    from nbdscope.capture.tcp import TcpStreams
    from nbdscope.decoder import Connection

try:
    from nbdscope import _fastpath  # type: ignore[attr-defined]
except ImportError:  # not built (no compiler where it was installed): the pure-Python path does it all
    _fastpath = None

_READ, _WRITE = int(Cmd.READ), int(Cmd.WRITE)
_TAKEN = (_READ, _WRITE)  # the commands whose requests and replies the Scanner takes
_DONE, _OFFSET_DATA = int(ReplyFlag.DONE), int(ReplyType.OFFSET_DATA)
# The addons that hear READ or WRITE requests or their replies and whose silence on a message the Scanner
# can tell from the limits ``limits`` computes (with a compact header, no command flags, no error, a
# cookie not in flight for a request and in flight for a reply). Any other addon hearing them keeps
# every connection in Python. Each entry's reason, by the rule's own early returns:
QUIET: frozenset[type] = frozenset({
    Statistics,  # kept by the Scanner itself, handed over on release
    UnalignedRequest,  # offset and length multiples of the minimum block the client asked for (align)
    RequestBeyondExport,  # offset + length within the export's size
    PayloadTooLarge,  # length within the agreed maximum payload, or 32 MiB (maxlen)
    FlagNotAdvertised, ReservedBitsSet,  # no command flags
    CookieReuse,  # the cookie not in flight
    ReplyKind, ExtendedHeaders,  # compact requests and simple replies with neither extension agreed
    SimpleReplyToStructuredRead,  # simple replies only where structured replies were not agreed
    UnalignedExtent,  # not a block status chunk
    BadReplyChunk,  # one OFFSET_DATA chunk marked DONE with all the data asked for, no reply open (``settled``)
    HardDisconnect, ErrorValue,  # no error, no payload over 32 MiB
    DisconnectProtocol,  # neither NBD_CMD_DISC nor NBD_ESHUTDOWN seen (its ``settled``)
    ReadRequest, RequestFields,  # length not 0
    WriteToReadOnly,  # writes only where the export is not read-only
    AdvertisedRefused,  # counts the successful writes it would have counted (its ``quiet_replies``)
    StaleRead,  # no write to the export acknowledged yet, nothing of its own pending (its ``settled``); with it
    # the Scanner takes no writes, whose data it would skip, and a first acknowledged write on any connection
    # of the export brings the connections of that export back (its ``adopting``)
})
QUIET_STREAM: frozenset[type] = frozenset({ProxyAction})  # hear raw items, but only the proxy's notes
WAIT = 16  # data items of a connection after a release before it is considered again
LONGEST_WAIT = 4096  # the wait doubles while adoptions end soon (a connection whose messages are seldom quiet)
SHORT = 64  # natively taken messages under which an adoption counts as a failure


def available() -> bool:
    """Whether the compiled path can run here (built, and not turned off with NBDSCOPE_PURE=1)."""
    return _fastpath is not None and not os.environ.get("NBDSCOPE_PURE")


def for_engine(engine: Engine, *, trace: object = None) -> Accelerator | None:
    """An Accelerator for this engine, or None where the pure-Python path must do everything."""
    if not available() or trace is not None or not engine_allows(engine):
        return None
    return Accelerator(engine)


def engine_allows(engine: Engine) -> bool:
    """No addon needs what the Scanner does not make: raw items, payloads, headers, payload ranges,
    or the events of messages it takes (beyond the addons of QUIET)."""
    if engine.keep_headers or engine.track_payload or any("data" in a.NEEDS for a in engine.addons):
        return False  # (payloads for the rules that compare them are fine: those rules are in QUIET)
    if any(type(getattr(hook, "__self__", None)) not in QUIET_STREAM and not _silent(hook.__self__)
           for hook in engine._hooks["stream"]):
        return False
    if not any(type(a) is Statistics for a in engine.addons):
        return False
    for addon in engine.addons:
        if type(addon) is JsonlLines and not addon.flush:
            continue  # the Scanner writes its lines (fastpath_lines.py)
        if defines(addon, "message") and type(addon) not in QUIET and any(
                addon.wants(cls, cmd) for cls in (ev.Request, ev.SimpleReply, ev.ReplyChunk) for cmd in _TAKEN):
            return False
    return True


def _silent(addon: object) -> bool:
    """A console timeline without message lines (the proxy's --quiet): its stream hook only writes a held
    message line, and it holds none."""
    return type(addon) is TimelineLines and not addon.messages


class Accelerator:
    """Hands steady connections to the Scanner and takes them back (one per engine; one Scanner per file)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.scanner: Any = None
        self.tcp: TcpStreams | None = None
        self.adopted: dict[int, tuple[int, Session, Connection, Half | None, Half | None]] = {}  # slot -> conn
        self.keys: dict[bytes, int] = {}  # fast_key of an adopted half -> slot
        self.wait: dict[int, int] = {}  # conn id -> data items to let pass before trying again
        self.backoff: dict[int, int] = {}
        # rules whose state may forbid taking a connection over, and rules that count what the Scanner took
        self.settled: list[Callable[[Session], bool]] = _hooks(engine, "settled")
        self.absorbing: list[Callable[[Session, int, int], None]] = _hooks(engine, "quiet_replies")
        self.taken = 0  # messages the Scanner took, over the run (for benchmarks and tests)
        self.jsonl = next((a for a in engine.addons if type(a) is JsonlLines), None)
        self.templates: dict[str, tuple[Any, ...] | None] = {}  # session id -> its JSONL templates
        self.writing = False  # the Scanner knows where JSONL lines go
        # a rule that compares payloads needs every write's data, which the Scanner skips: writes stay in Python
        self.writes = not any(getattr(a, "NEEDS_DATA", False) for a in engine.addons)
        for adopting in _hooks(engine, "adopting"):
            adopting(self.recheck)

    def begin(self, little: bool, nano: bool, layout: FastLayout, tcp: TcpStreams, etype_at: int) -> Any:
        """A Scanner for the next classic pcap file of this link layout: its ``scan``."""
        self.release_all()
        self.tcp = tcp
        self.writing = False
        self.scanner = _fastpath.Scanner(little, nano, layout.ip, etype_at, M.REQUEST_MAGIC, M.SIMPLE_REPLY_MAGIC,
                                         M.STRUCTURED_REPLY_MAGIC, _READ, _WRITE, _DONE, _OFFSET_DATA, self.release)
        return self.scanner.scan

    # ------------------------------------------------------------ adoption

    def consider(self, half: Half) -> None:
        """After Python decoded data of this connection: adopt it if it is steady."""
        self.consider_id(half.conn_id)

    def consider_id(self, cid: int) -> None:
        """After Python decoded data of the connection with this id: adopt it if it is steady."""
        wait = self.wait.get(cid, 0)
        if wait > 0:
            self.wait[cid] = wait - 1
            return
        if not self._adopt(cid):
            self.wait[cid] = WAIT

    def _adopt(self, cid: int) -> bool:
        entry = self.engine._open.get(cid)
        if entry is None or self.scanner is None or len(self.adopted) >= 64:
            return False
        session, conn = entry
        if not self._adoptable(session, conn):
            return False
        lines = None
        if self.jsonl is not None:
            if self.jsonl.several:
                return False  # over several files every line names its file, which the templates do not
            if session.id not in self.templates:
                self.templates[session.id] = templates(session.id, conn.phase, self.engine.t0())
            lines = self.templates[session.id]
            if lines is None:
                return False
            if not self.writing:
                self.scanner.output(self.jsonl.write, orjson.dumps, self.engine.t0())
                self.writing = True
        halves = self._halves(cid)
        if halves is None:
            return False
        (kc, hc), (ks, hs) = halves
        table = conn.flights._table
        flights = [(cookie, e[1], e[5], e[3], e[4], e[2], e[6], e[0]) for cookie, e in table.items()]
        seq = conn.next_seq()  # the count goes on in the Scanner (release sets a new counter)
        c, s = conn._c, conn._s
        slot = self.scanner.adopt(cid, (kc, hc.next_seq if hc else 0, hc.offset if hc else 0, c.fed, c.skip),
                                  (ks, hs.next_seq if hs else 0, hs.offset if hs else 0, s.fed, s.skip), seq,
                                  limits(session, self.writes), flights, lines)
        self.adopted[slot] = (cid, session, conn, hc, hs)
        self.keys[kc] = self.keys[ks] = slot
        return True

    def _halves(self, cid: int) -> tuple[tuple[bytes, Half | None], tuple[bytes, Half | None]] | None:
        """The connection's two TCP halves (client's first) with their keys, if both are in order."""
        if self.tcp is None:
            return None
        halves = [(key, h) for key, h in self.tcp.fast.items() if h.conn_id == cid]
        if len(halves) != 2 or any(h.heap or h.next_seq is None for _, h in halves):
            return None
        (kc, hc), (ks, hs) = sorted(halves, key=lambda kh: kh[1].dir != "c2s")
        if hc.dir != "c2s" or hs.dir != "s2c":
            return None
        return (kc, hc), (ks, hs)

    def _adoptable(self, session: Session, conn: Connection) -> bool:
        c, s = conn._c, conn._s
        flights = conn.flights
        # (never after STARTTLS: the segments then carry TLS records, whatever the decoder makes of them)
        return (conn.transmission and not conn.tls and not session.tls and not conn.closing and not conn.disc
                and c.state is State.REQUESTS
                and s.state is State.REPLIES and not c.buf and not s.buf and c.sink is None and s.sink is None
                and not session.extended_headers
                and not session.followups and not session.shadowed
                and not flights._chunks and not flights._errored and not flights._shadowed
                and len(flights._table) < 1000 and list(flights._table) == list(session.in_flight)
                and all(not f.ambiguous and not f.chunks for f in session.in_flight.values())
                and all(settled(session) for settled in self.settled))

    # ------------------------------------------------------------ release

    def release(self, slot: int) -> None:
        """Give a connection back: its state into the Python objects, as Python would have left them."""
        cid, session, conn, hc, hs = self.adopted.pop(slot)
        (_, c2s, s2c, seq, messages, last_frame, last_time, tallies, blameless_writes, flights,
         recent) = self.scanner.release(slot)
        for key in [k for k, v in self.keys.items() if v == slot]:
            del self.keys[key]
        _give_sides(((hc, conn._c, c2s), (hs, conn._s, s2c)))
        conn.next_seq = itertools.count(seq).__next__
        table = conn.flights._table
        table.clear()
        session.in_flight.clear()
        for cookie, cmd, flags, offset, length, frame, time, fseq, start, end, request in flights:
            if request is None:
                payload = length if cmd == _WRITE else 0
                request = ev.make_request("c2s", frame, time, conn.phase, None, fseq, start, end, cookie, cmd,
                                          flags, offset, length, False, payload, None, (),
                                          start + REQUEST_HEADER if payload else None)
            table[cookie] = (request, cmd, frame, offset, length, flags, time)
            session.in_flight[cookie] = Flight(request)
        _remember(session.recent, recent)
        if messages:
            session.messages += messages
            session.last_frame = max(session.last_frame, last_frame)
            session.last_time = last_time
            self.taken += messages
        for command, count, nbytes, lat in tallies:
            if count or lat:
                stats = _stats(session, command)
                stats.count += count
                stats.bytes += nbytes
                values = array("d")
                values.frombytes(lat)
                stats.add_latencies(values)
        if blameless_writes:
            for absorb in self.absorbing:
                absorb(session, _WRITE, blameless_writes)
        short = messages < SHORT
        self.backoff[cid] = min(LONGEST_WAIT, self.backoff.get(cid, WAIT // 2) * 2) if short else WAIT
        self.wait[cid] = self.backoff[cid]

    def settle(self) -> None:
        """Before the Scanner writes lines: the JSONL writer's SESSION_END held back since a close that Python
        decoded goes out first, where the pure-Python path puts it (before the next message line)."""
        if self.jsonl is not None and self.jsonl.closing is not None:
            self.jsonl.settle()

    def touch(self, src: bytes, sport: int, dst: bytes, dport: int) -> None:
        """Python is about to take a segment of this address pair by the general path: if it belongs to an
        adopted connection, that connection comes back first."""
        slot = self.keys.get(fast_key(src, sport, dst, dport))
        if slot is not None:
            self.release(slot)

    def recheck(self) -> None:
        """A rule's state changed for other connections than the one decoded (a first acknowledged write to an
        export, under --verify-data): the adopted connections it no longer leaves alone come back."""
        for slot, (_, session, *_rest) in list(self.adopted.items()):
            if not all(settled(session) for settled in self.settled):
                self.release(slot)

    def release_all(self) -> None:
        for slot in list(self.adopted):
            self.release(slot)


def _give_sides(sides: Any) -> None:
    """Each direction's state from the Scanner into its TCP half (none for the proxy's tap) and decoder side."""
    for half, side, st in sides:
        next_seq, offset, side.fed, side.skip, head, frame, time = st
        if half is not None:
            half.next_seq, half.offset = next_seq, offset
        if head:
            side.buf += head
        if frame:
            side.frame, side.time = frame, time


def _hooks(engine: Engine, name: str) -> list[Any]:
    """The addons' methods of this name (the few rules that take part in adoption define them)."""
    return [hook for hook in (getattr(a, name, None) for a in engine.addons) if callable(hook)]


def limits(session: Session, writes: bool = True) -> tuple[int, int, int, int, int, int, int, bool, bool]:
    """The Scanner's limits, by the rules' own early returns: (size or -1, the alignment requests need or 0,
    the longest READ, the longest WRITE, the most data in a quiet chunk, the alignment and longest length of a
    write a correct server may not refuse, whether replies are structured, whether writes may be taken: not
    where ``writes`` is false, nor on a read-only export)."""
    size = session.size if session.size is not None else -1
    block = session.min_block
    # unaligned-request, request-beyond-export; payload-too-large (its limit), hard-disconnect (32 MiB)
    align = block if block and block != 1 and session.block_size_requested else 0
    limit = session.max_payload if session.block_size_requested else None
    maxlen = limit if limit is not None else DEFAULT_MAX_PAYLOAD
    wmax = min(maxlen, DEFAULT_MAX_PAYLOAD)
    # a chunk's length within 32 MiB (hard-disconnect), its data within the maximum payload (bad-reply-chunk)
    chunkmax = min(DEFAULT_MAX_PAYLOAD - 8, session.max_payload or DEFAULT_MAX_PAYLOAD)
    # refusals.blameless: what advertised-refused counts (quiet_replies)
    bl_align, bl_max = session.min_block or 0, session.max_payload or DEFAULT_MAX_PAYLOAD
    structured = session.structured_replies is True  # (None, a capture begun mid-stream: chunks stay in Python)
    writes = writes and not session.server_has_flag(TransmissionFlag.READ_ONLY)  # write-to-read-only
    return size, align, maxlen, wmax, chunkmax, bl_align, bl_max, structured, writes


def _remember(recent: dict[int, int], completed: list[tuple[int, int]]) -> None:
    """Replay the Scanner's completions (distinct cookies, oldest first) as Session.track would have."""
    from nbdscope.analysis.session import RECENT

    for cookie, command in completed:
        recent.pop(cookie, None)
        recent[cookie] = command
        if len(recent) > RECENT:
            del recent[next(iter(recent))]
