"""Data consistency: a read that does not return what the same connection wrote
and saw acknowledged before sending the read (spec "Ordering of messages and
writes"). Needs payload bytes, so it only runs with `analyze --check-data`."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.analysis.shadow import ShadowDisk
from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd

_WRITES = (Cmd.WRITE, Cmd.WRITE_ZEROES, Cmd.TRIM)


@dataclass
class _Conn:
    disk: ShadowDisk = field(default_factory=ShadowDisk)
    writes: dict[int, tuple[int, int, int, bytes | None]] = field(default_factory=dict)  # cookie -> cmd, off, len, data
    reads: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # read cookie -> racing write ranges
    awaiting: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # simple replies whose data follows
    flagged: int = 0


class StaleRead(Rule):
    INFO = RuleInfo("stale-read", "error", "server", "Ordering of messages and writes",
                    "a read returned data other than what this connection wrote and saw acknowledged before "
                    "the read was sent (needs --check-data)")

    MAX_REPORTS = 10  # per connection; one broken cache produces thousands

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.conns: dict[str, _Conn] = {}

    def on_event(self, session: Session, event: ev.Event) -> None:
        c = self.conns.get(session.id)
        if c is None:
            c = self.conns[session.id] = _Conn()
        if isinstance(event, ev.Request):
            if event.command in _WRITES:
                c.writes[event.cookie] = (event.command, event.offset, event.length, None)
                span = (event.offset, event.offset + event.length)
                for racing in c.reads.values():
                    racing.append(span)
            elif event.command == Cmd.READ:
                c.reads[event.cookie] = [(o, o + n) for _cmd, o, n, _d in c.writes.values()]
        elif isinstance(event, ev.PayloadData):
            if event.kind == "write" and event.cookie in c.writes:
                cmd, off, n, _ = c.writes[event.cookie]
                c.writes[event.cookie] = (cmd, off, n, event.data)
            elif event.kind == "read":
                racing = c.reads.get(event.cookie)
                if racing is None:
                    racing = c.awaiting.pop(event.cookie, None)
                if racing is not None:
                    self._check(session, c, event, event.offset, event.data, racing)
        elif isinstance(event, ev.ReplyChunk) and event.hole_length and event.cookie in c.reads:
            self._check(session, c, event, event.offset or 0, None, c.reads[event.cookie], event.hole_length)
        if isinstance(event, ev.Reply) and event.completes:
            self._complete(c, event)
        elif isinstance(event, ev.ConnectionEnd):
            self.conns.pop(session.id, None)

    def _complete(self, c: _Conn, reply: ev.Reply) -> None:
        racing = c.reads.pop(reply.cookie, None)
        if racing is not None and isinstance(reply, ev.SimpleReply) and reply.data_length:
            c.awaiting[reply.cookie] = racing  # the read data arrives right after this header
        entry = c.writes.pop(reply.cookie, None)
        if entry is None:
            return
        cmd, off, n, data = entry
        failed = (isinstance(reply, ev.SimpleReply) and reply.error) or \
            (isinstance(reply, ev.ReplyChunk) and reply.error is not None)
        if failed or cmd == Cmd.TRIM or (cmd == Cmd.WRITE and data is None):
            c.disk.forget(off, n)  # contents now unknown
        elif cmd == Cmd.WRITE and data is not None:
            c.disk.write(off, data, reply.frame)
        elif cmd == Cmd.WRITE_ZEROES:
            c.disk.zero(off, n, reply.frame)

    def _check(self, session: Session, c: _Conn, event: ev.Event, offset: int, data: bytes | None,
               racing: list[tuple[int, int]], length: int | None = None) -> None:
        cookie = getattr(event, "cookie", 0)
        bad = c.disk.compare(offset, data, len(data) if data is not None else length or 0, racing)
        if bad is None or c.flagged >= self.MAX_REPORTS:
            return
        c.flagged += 1
        sector, frame = bad
        what = "a hole (zeroes)" if data is None else "data"
        self.flag(session, event, f"read at offset {offset} returned {what} that differs at offset {sector} from "
                  f"what this connection wrote there (write acknowledged in frame {frame}) before sending the read",
                  offset=sector, write_frame=frame, cookie=cookie)
