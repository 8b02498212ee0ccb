"""Data consistency over the shadow disk (analyze --verify-data): reads and block
status that contradict writes the server had acknowledged (spec "Ordering of
messages and writes", "Transmission flags" NBD_FLAG_CAN_MULTI_CONN)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.analysis.shadow import SECTOR, ZERO_DIGEST, Sector, ShadowDisk, digest
from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd, CommandFlag, TransmissionFlag
from nbdscope.spec.metacontexts import BASE_ALLOCATION

_WRITES = (Cmd.WRITE, Cmd.WRITE_ZEROES, Cmd.TRIM)
STATE_ZERO = 2  # base:allocation NBD_STATE_ZERO


@dataclass
class _Write:
    command: int
    offset: int
    length: int
    flags: int
    frame: int
    data: bytes | None = None


@dataclass
class _Read:
    sent: int  # event sequence number of the request
    racing: list[tuple[int, int]]  # ranges written concurrently: either answer is valid there


@dataclass
class _Conn:
    export: tuple[str, str | None]
    writes: dict[int, _Write] = field(default_factory=dict)
    reads: dict[int, _Read] = field(default_factory=dict)
    awaiting: dict[int, _Read] = field(default_factory=dict)  # simple replies whose data follows
    unflushed: set[int] = field(default_factory=set)  # sectors written here, not yet flushed
    flushes: dict[int, tuple[set[int], int]] = field(default_factory=dict)  # flush cookie -> sectors, frame


def _export(session: Session) -> tuple[str, str | None]:
    """The export a connection reads and writes: its server's endpoint and the export name."""
    return str(session.server), session.export_name


class StaleRead(Rule):
    INFO = RuleInfo("stale-read", "error", "server", "Ordering of messages and writes",
                    "a read (or a block status zero claim) contradicting data the server had acknowledged: on "
                    "the same connection, or on another one after a flush or FUA when CAN_MULTI_CONN was "
                    "advertised (needs --verify-data)")
    # the statements these enforce sit with the transmission flags (NBD_FLAG_CAN_MULTI_CONN, tflags.8) and
    # with what a read returns, which the spec implies rather than states: no row is cited until linked
    CHECKS = (
        Check("same-connection", (), "a read or zero claim that contradicts a write this connection had "
              "acknowledged before sending the read", severity="error",
              consequence="the client reads back other data than it wrote: silent corruption (a broken cache "
                          "or a lost write)",
              fix="server: make acknowledged writes visible to every later read on the connection",
              example="read returned other data at offset 4096: this connection wrote there in frame 12 and had "
                      "the write acknowledged before this request was sent"),
        Check("multi-conn", ("tflags.8",), "a read on one connection that misses a write another connection had "
              "made durable (flush or FUA) while NBD_FLAG_CAN_MULTI_CONN was advertised",
              consequence="a multi-connection client (nbdcopy, qemu with several connections) reads stale data",
              fix="server: advertise NBD_FLAG_CAN_MULTI_CONN only when caches are shared or absent",
              example="read returned other data at offset 0: connection s1 wrote there in frame 12, made it durable "
                      "in frame 14 (flush or FUA), and the server advertises NBD_FLAG_CAN_MULTI_CONN"),
    )
    EVENTS = (ev.Request, ev.PayloadData, ev.SimpleReply, ev.ReplyChunk, ev.ConnectionEnd)

    NEEDS_DATA = True
    MAX_REPORTS = 10  # per session: one broken cache produces thousands of findings

    def __init__(self) -> None:
        super().__init__()
        self.disks: dict[tuple[str, str | None], ShadowDisk] = {}
        self.conns: dict[str, _Conn] = {}
        self.multi: dict[str, bool] = {}
        self.seq = 0
        self.reported: dict[str, int] = {}
        self._recheck: Callable[[], None] | None = None  # the compiled path's, while it takes connections

    def adopting(self, recheck: Callable[[], None]) -> None:
        """The compiled path takes quiet connections over (fastpath.py): ``recheck`` asks it to give back those
        whose reads this rule must now follow."""
        self._recheck = recheck

    def settled(self, session: Session) -> bool:
        """Whether this rule would ignore the connection's reads and their replies: no write to its export has
        been acknowledged (reads sent before then are not followed) and nothing of its own is pending."""
        c = self.conns.get(session.id)
        if c is None:
            return _export(session) not in self.disks
        return c.export not in self.disks and not (c.writes or c.reads or c.awaiting or c.flushes)

    def _conn(self, session: Session) -> _Conn:
        c = self.conns.get(session.id)
        if c is None:
            c = self.conns[session.id] = _Conn(_export(session))
        return c

    def _racing(self, export: tuple[str, str | None]) -> list[tuple[int, int]]:
        return [(w.offset, w.offset + w.length) for c in self.conns.values() if c.export == export
                for w in c.writes.values()]

    def wants_read_data(self, session: Session, offset: int, length: int) -> bool:
        """Read data can contradict only sectors the shadow disk holds: without them, gathering and
        hashing it is wasted (a capture with no writes then costs --verify-data nothing)."""
        disk = self.disks.get(self._conn(session).export)
        if disk is None or not disk.sectors:
            return False
        covered = disk.covered(offset, length)
        return len(covered) > 64 or any(n in disk.sectors for n in covered)

    def message(self, session: Session, event: ev.Event) -> None:
        self.seq += 1
        c = self._conn(session)
        if isinstance(event, ev.Reply) and event.cookie not in c.reads and event.cookie not in c.writes \
                and event.cookie not in c.flushes:
            return  # a reply to nothing followed here (most reads, when nothing was written)
        self.multi[session.id] = session.server_has_flag(TransmissionFlag.CAN_MULTI_CONN)  # the server's promise
        if isinstance(event, ev.Request):
            self._request(c, event)
        elif isinstance(event, ev.PayloadData):
            self._payload(session, c, event)
        elif isinstance(event, ev.ReplyChunk) and event.cookie in c.reads:
            self._chunk(session, c, event)
        if isinstance(event, ev.Reply) and event.completes:
            self._complete(session, c, event)
        elif isinstance(event, ev.ConnectionEnd):
            self.conns.pop(session.id, None)

    def _request(self, c: _Conn, event: ev.Request) -> None:
        """Writes are remembered (and race with every read in flight on the export); reads wait for data."""
        if event.command in _WRITES:
            c.writes[event.cookie] = _Write(event.command, event.offset, event.length, event.flags, event.frame)
            span = (event.offset, event.offset + event.length)
            for other in self.conns.values():
                if other.export == c.export:
                    for pending in (*other.reads.values(), *other.awaiting.values()):
                        pending.racing.append(span)
        elif event.command in (Cmd.READ, Cmd.BLOCK_STATUS) and c.export in self.disks:
            # (a read sent before any write to the export was acknowledged cannot contradict one:
            # nothing obliged the server to show it yet, so such reads are not followed at all)
            c.reads[event.cookie] = _Read(self.seq, self._racing(c.export))
        elif event.command == Cmd.FLUSH:
            c.flushes[event.cookie] = (set(c.unflushed), event.frame)

    def _payload(self, session: Session, c: _Conn, event: ev.PayloadData) -> None:
        if event.kind == "write" and event.cookie in c.writes:
            c.writes[event.cookie].data = event.data
        elif event.kind == "read":
            read = c.reads.get(event.cookie) or c.awaiting.pop(event.cookie, None)
            if read is not None:
                self._check(session, c, event, read, event.offset, event.data, len(event.data))

    def _chunk(self, session: Session, c: _Conn, event: ev.ReplyChunk) -> None:
        """A hole reads as zeros; so do extents that base:allocation calls zero."""
        read = c.reads[event.cookie]
        if event.hole_length:
            self._check(session, c, event, read, event.offset or 0, None, event.hole_length)
        if event.extents and event.context == BASE_ALLOCATION and event.request_offset is not None:
            off = event.request_offset
            for length, status in event.extents:
                if status & STATE_ZERO:
                    self._check(session, c, event, read, off, None, length, claim="block status says zero")
                off += length

    def _complete(self, session: Session, c: _Conn, reply: ev.Reply) -> None:
        # a simple reply's data follows its header at once: whatever still awaits data by the next reply
        # was not gathered (the decoder was told it could not matter)
        c.awaiting.clear()
        read = c.reads.pop(reply.cookie, None)
        if read is not None and isinstance(reply, ev.SimpleReply) and reply.data_length:
            c.awaiting[reply.cookie] = read  # the read data arrives right after this header
        ok = not reply.failed
        flush = c.flushes.pop(reply.cookie, None)
        if flush is not None and ok:
            self._share(c, flush[0], reply.frame)
            c.unflushed -= flush[0]
        w = c.writes.pop(reply.cookie, None)
        if w is None:
            return
        disk = self.disks.get(c.export)
        if disk is None:
            disk = self.disks[c.export] = ShadowDisk()
            if self._recheck is not None:
                self._recheck()  # the other connections' reads of this export count from now on
        if not ok or w.command == Cmd.TRIM or (w.command == Cmd.WRITE and w.data is None):
            disk.forget(w.offset, w.length)  # contents now unknown
            return
        fua = bool(w.flags & CommandFlag.FUA)
        entry = Sector(0, session.id, w.frame, self.seq, self.seq if fua else None, reply.frame if fua else None)
        written = disk.store(w.offset, w.data if w.command == Cmd.WRITE else None, w.length, entry)
        if not fua:
            c.unflushed.update(written)

    def _share(self, c: _Conn, sectors: set[int], frame: int) -> None:
        disk = self.disks.get(c.export)
        if disk is None:
            return
        for n in sectors:
            s = disk.sectors.get(n)
            if s is not None and s.shared is None:
                s.shared, s.flush_frame = self.seq, frame

    def _check(self, session: Session, c: _Conn, event: ev.Event, read: _Read, offset: int, data: bytes | None,
               length: int, claim: str | None = None) -> None:
        disk = self.disks.get(c.export)
        if disk is None or self.reported.get(session.id, 0) >= self.MAX_REPORTS:
            return
        for n in disk.covered(offset, length):
            s = disk.sectors.get(n)
            if s is None:
                continue
            lo = n * SECTOR
            if any(a < lo + SECTOR and lo < b for a, b in read.racing):
                continue
            same = s.writer == session.id
            if same and s.acked > read.sent:
                continue  # acknowledged only after this read was sent
            if not same and not (self.multi.get(s.writer) and s.shared is not None and s.shared < read.sent):
                continue  # nothing obliges another connection to see it yet
            if data is None:
                got = ZERO_DIGEST
            else:
                start = lo - offset
                got = digest(data[start:start + SECTOR])
            if got == s.digest or (claim and s.digest == ZERO_DIGEST):
                continue
            self.reported[session.id] = self.reported.get(session.id, 0) + 1
            how = claim or ("read returned zeroes (a hole)" if data is None else "read returned other data")
            if same:
                why = f"this connection wrote there in frame {s.write_frame} and had the write acknowledged"
            else:
                why = (f"connection {s.writer} wrote there in frame {s.write_frame}, made it durable in frame "
                       f"{s.flush_frame} (flush or FUA), and the server advertises NBD_FLAG_CAN_MULTI_CONN, so "
                       "every connection must see it")
            self.flag(session, event, f"{how} at offset {lo}: {why} before this request was sent",
                      check="same-connection" if same else "multi-conn",
                      offset=lo, write_frame=s.write_frame, writer=s.writer, flush_frame=s.flush_frame,
                      cookie=getattr(event, "cookie", None))
            return
