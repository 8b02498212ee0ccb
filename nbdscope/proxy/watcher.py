"""The proxy's watcher: turns the relay's records back into stream items and runs
them through the same engine that analyses captures, then writes the outputs (the
console timeline, anomalies, JSONL, pcapng).

It runs in a process of its own (see tap.py), so a slow output or an expensive
rule costs the relay nothing but pipe space. The watcher numbers the frames itself,
as the pcapng will hold them (capture/pcapio/synth.py says how many each step
takes), so the console, the JSONL and the capture agree."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any, BinaryIO

from nbdscope import vocab as it
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Engine, Result
from nbdscope.analysis.session import Session
from nbdscope.capture.pcapio.redact import DataMask
from nbdscope.capture.pcapio.synth import CLOSE_FRAMES, MAX_SEGMENT, OPEN_FRAMES, SessionCapture, data_frames
from nbdscope.decoder import events as ev
from nbdscope.proxy import tap
from nbdscope.report.records import anomaly_json, message_json
from nbdscope.report.timeline import anomaly_line, message_line
from nbdscope.vocab import Direction

MessageHook = Callable[[Session, ev.Event], None]
AnomalyHook = Callable[[Anomaly], None]


class Watcher:
    def __init__(self, *, jsonl: BinaryIO | None, pcapng: BinaryIO | None, quiet: bool, redact: bool,
                 console: IO[str] = sys.stdout, log: Callable[[str], None] | None = None,
                 on_message: MessageHook | None = None, on_anomaly: AnomalyHook | None = None,
                 keep_headers: bool = False) -> None:
        self.jsonl, self.console, self.quiet = jsonl, console, quiet
        self.redact = redact
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.hooks = (on_message, on_anomaly)
        self.engine = Engine(on_message=self._message, on_anomaly=self._anomaly, track_payload=redact,
                             keep_headers=keep_headers)
        self.pcap = SessionCapture(pcapng) if pcapng is not None else None
        self.pcapng = pcapng
        self.frames = 0  # frames numbered so far: the pcapng's, whether or not one is written
        self.mask = DataMask() if redact else None
        self.offsets: dict[tuple[int, str], int] = {}
        self.notes: dict[tuple[int, str], str] = {}
        self.totals: dict[str, Any] = {}
        self.errors = 0

    # ------------------------------------------------------------- outputs

    def _message(self, session: Session, e: ev.Event) -> None:
        t0 = self.engine.t0()
        if not self.quiet:
            self.console.write(message_line(session.id, e, t0) + "\n")
        if self.jsonl is not None:
            self.jsonl.write(message_json(session.id, e, t0))
        if self.hooks[0] is not None:
            self.hooks[0](session, e)

    def _anomaly(self, a: Anomaly) -> None:
        self.console.write(anomaly_line(a) + "\n")
        self.console.flush()
        if self.jsonl is not None:
            self.jsonl.write(anomaly_json(a))
            self.jsonl.flush()
        if self.hooks[1] is not None:
            self.hooks[1](a)

    def flush(self) -> None:
        self.console.flush()
        for out in (self.jsonl, self.pcapng):
            if out is not None:
                out.flush()

    # ------------------------------------------------------------- records

    def record(self, kind: int, direction: Direction, conn: int, time: float, payload: memoryview) -> None:
        try:
            self._record(kind, direction, conn, time, payload)
        except Exception as exc:  # a bug in watching must not lose the rest of the log
            self.errors += 1
            if self.errors <= 3:
                self.log(f"proxy: decoding error ignored ({type(exc).__name__}: {exc}); bytes were still relayed")

    def _record(self, kind: int, direction: Direction, conn: int, time: float, payload: memoryview) -> None:
        if kind == tap.DATA:
            self._data(conn, direction, time, payload)
        elif kind == tap.NOTE:
            key = (conn, direction)
            text = bytes(payload).decode("utf-8", "replace")
            self.notes[key] = f"{self.notes[key]}; {text}" if key in self.notes else text
        elif kind == tap.OPEN:
            info = json.loads(bytes(payload))
            client, server = it.Endpoint(*info["client"]), it.Endpoint(*info["server"])
            frame = self.frames + 1
            self.frames += OPEN_FRAMES
            if self.pcap is not None:
                self.pcap.open(conn, client, server, time, info.get("comment"))
            self.offsets[(conn, "c2s")] = self.offsets[(conn, "s2c")] = 0
            self.engine.feed(it.StreamOpen(conn, client, server, frame, time, True, "proxy"))
        elif kind == tap.CLOSE:
            self.frames += CLOSE_FRAMES  # the last FIN closes the connection in a capture too
            self.engine.feed(it.StreamClose(conn, "fin", self.frames, time, direction))  # type: ignore[arg-type]
            if self.pcap is not None:
                self.pcap.close(conn, direction, time)
            if self.mask is not None:
                self.mask.drop(conn)
            for d in ("c2s", "s2c"):
                self.offsets.pop((conn, d), None)
                self.notes.pop((conn, d), None)
        elif kind == tap.END:
            self.totals = json.loads(bytes(payload))
        elif kind == tap.LOG:
            self.log(bytes(payload).decode("utf-8", "replace"))

    def _data(self, conn: int, direction: Direction, time: float, data: memoryview) -> None:
        key = (conn, direction)
        if key not in self.offsets:
            return  # a session the watcher never saw open
        base = self.frames
        feed = self.engine.feed
        decoder = self.engine.connection(conn)
        # decoded segment by segment, with the frame numbers the pcapng gives them; whole
        # segments of read or write data go in one piece (they yield no event to number)
        at, end = 0, len(data)
        while at < end:
            step = MAX_SEGMENT
            if decoder is not None:
                quiet = min(decoder.quiet_bytes(direction), end - at)
                step = max(step, quiet - quiet % MAX_SEGMENT)
            feed(it.StreamData(conn, direction, data[at:at + step], base + at // MAX_SEGMENT + 1, time))  # type: ignore[arg-type]
            at += step
        self.frames += data_frames(end)
        start = self.offsets[key]
        self.offsets[key] = start + len(data)
        note = self.notes.pop(key, None)
        if self.pcap is not None:
            self.pcap.data(conn, direction, self._redacted(conn, direction, data, start), time, note)

    def _redacted(self, conn: int, direction: Direction, data: memoryview, start: int) -> bytes | memoryview:
        """The chunk with read and write data zeroed (headers and lengths kept), if asked."""
        decoder = self.engine.connection(conn)
        if self.mask is None or decoder is None:
            return data
        key = (conn, direction)
        self.mask.add(key, decoder.take_payload_ranges(direction))
        out = bytearray(data)
        self.mask.zero(out, 0, key, start, len(data))
        self.mask.forget_before(key, start + len(data))
        return bytes(out)

    # ---------------------------------------------------------------- runs

    def run(self, fd: int, ring: tap.Ring, every: float) -> Result:
        """Watch until the relay closes the pipe, flushing outputs every ``every`` seconds."""
        record = self.record
        for kind, direction, conn, time, payload in tap.read_records(fd, ring, self.flush, every):
            record(kind, direction, conn, time, payload)
        result = self.engine.finish()
        self.flush()
        return result

    def summary(self, result: Result) -> str:
        t = self.totals
        bytes_ = t.get("bytes", {})
        return (f"nbdscope proxy: {t.get('sessions', len(result.sessions))} sessions, {bytes_.get('c2s', 0)} bytes "
                f"to the server, {bytes_.get('s2c', 0)} to clients, {len(result.anomalies)} anomalies, "
                f"{t.get('upstream_failures', 0)} upstream failures; at exit {t.get('left_open', 0)} sessions and "
                f"{t.get('left_tasks', 0)} tasks were still open")
