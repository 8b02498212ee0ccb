"""The proxy as a source: the relay's tap records turned back into stream items.

The relay runs in a forked child (``run.RelayProcess``); this side reads its records
and yields the same items a capture file gives, so the proxy is decoded, judged and
written by the ordinary pipeline. Frame numbers are given here, the way the
proxy's pcapng numbers its packets (three for a connection's handshake, one per
segment of at most MAX_SEGMENT bytes, two for its close), so the console, the
JSONL and the capture name the same frames whether or not a capture is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from nbdscope import vocab as it
from nbdscope.capture.pcapio.synth import CLOSE_FRAMES, MAX_SEGMENT, OPEN_FRAMES
from nbdscope.proxy import tap
from nbdscope.proxy.addresses import Address
from nbdscope.proxy.run import FLUSH_EVERY, RelayOptions, RelayProcess
from nbdscope.proxy.tap import DIRECTIONS

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine, Result
    from nbdscope.fastpath_tap import TapAccelerator


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class TapReader:
    """The relay's records as stream items: frame numbering, notes, the relay's totals and logs.
    Kept apart from the relay process so that any record sequence can be replayed through it."""

    def __init__(self, log: Callable[[str], None] = _stderr) -> None:
        self.log = log
        self.totals: dict[str, Any] = {}  # JSON: the relay's own counts, sent as it ends
        self.frames = 0
        self._notes: dict[tuple[int, str], str] = {}
        self._open: set[int] = set()
        self.names: dict[int, str] = {}  # connection -> session id, given as the engine gives them
        self.native: TapAccelerator | None = None  # the compiled path (nbdscope/fastpath_tap.py), if allowed

    def accelerate(self, engine: Engine) -> None:
        """Let the compiled path take the quiet messages of this engine's connections."""
        from nbdscope.fastpath_tap import for_tap

        self.native = for_tap(engine)

    def items(self, records: Iterable[tap.Record]) -> Iterator[it.StreamItem]:
        for kind, direction, conn, time, payload in records:
            if kind == tap.DATA and conn in self._open:
                yield from self._data(conn, direction, time, payload)
                continue
            self._hand_back(conn)  # anything but its data is Python's business
            if kind == tap.OPEN:
                info = json.loads(bytes(payload))
                client, server = it.Endpoint(*info["client"]), it.Endpoint(*info["server"])
                self._open.add(conn)
                # the engine names sessions s1, s2, ... in the order of their StreamOpen, and every
                # connection here is one StreamOpen: so the relay's log can say what the console says
                self.names[conn] = f"s{len(self.names) + 1}"
                if info.get("comment"):  # before the open: a capture writer puts it on the SYN
                    yield it.StreamNote(conn, "c2s", info["comment"], self.frames + 1, time)
                yield it.StreamOpen(conn, client, server, self.frames + 1, time, True, "proxy")
                self.frames += OPEN_FRAMES
            elif kind == tap.CLOSE:
                left = [(d, self._notes.pop((conn, d))) for d in DIRECTIONS if (conn, d) in self._notes]
                if conn in self._open:
                    self._open.discard(conn)
                    for d, text in left:  # notes no bytes came to carry: a capture puts them on the close
                        yield it.StreamNote(conn, d, text, self.frames + 1, time)
                    reset = bytes(payload) == b"rst"
                    ends_at = self.frames + 1 if reset else self.frames + CLOSE_FRAMES  # where a reader ends it
                    self.frames += CLOSE_FRAMES
                    yield it.StreamClose(conn, "rst" if reset else "fin", ends_at, time, direction)
            elif kind == tap.ACTION and conn in self._open:
                yield self._action(conn, direction, time, payload)
            elif kind == tap.NOTE:
                key = (conn, direction)
                text = bytes(payload).decode("utf-8", "replace")
                self._notes[key] = f"{self._notes[key]}; {text}" if key in self._notes else text
            elif kind == tap.END:
                self.totals = json.loads(bytes(payload))
            elif kind in (tap.LOG, tap.SESSION_LOG):
                self._log(conn if kind == tap.SESSION_LOG else None, payload)
        self._hand_back(None)  # the Python objects hold everything again before the run ends

    def _hand_back(self, conn: int | None) -> None:
        """The compiled path gives this connection back (None: every connection), if it holds it."""
        native = self.native
        if native is not None:
            slot = native.slot_of(conn) if conn is not None else None
            if slot is not None:
                native.release(slot)
            elif conn is None:
                native.release_all()

    def open_count(self) -> int:
        return len(self._open)

    def _log(self, conn: int | None, payload: memoryview) -> None:
        """A line of the relay's log; one about a connection names it by its session id."""
        text = bytes(payload).decode("utf-8", "replace")
        self.log(f"proxy: {text}" if conn is None else f"proxy: {self.names.get(conn, f'connection {conn}')}: {text}")

    def _action(self, conn: int, direction: it.Direction, time: float, payload: memoryview) -> it.StreamNote:
        """Something the proxy did on purpose, as a note with its action (on the next frame)."""
        info = json.loads(bytes(payload))
        return it.StreamNote(conn, direction, info["text"], self.frames + 1, time, info["action"],
                             tuple(sorted(info.get("values", {}).items())))

    def _data(self, conn: int, direction: it.Direction, time: float,
              data: memoryview) -> Iterator[it.StreamItem]:
        """One relayed chunk as segments, each its own frame (a view of the ring: valid until the next item)."""
        native = self.native
        note = self._notes.pop((conn, direction), None)
        if note is not None:
            self._hand_back(conn)
            yield it.StreamNote(conn, direction, note, self.frames + 1, time)
        begin = 0
        if native is not None:
            slot = native.slot_of(conn)
            if slot is not None:
                native.settle()
                self.frames, rest = native.feed(slot, direction != "c2s", data, self.frames, time, MAX_SEGMENT)
                if rest is None:
                    return
                begin = rest - rest % MAX_SEGMENT + MAX_SEGMENT  # the end of the segment Python goes on in
                yield it.StreamData(conn, direction, data[rest:begin], self.frames, time)
        for at in range(begin, len(data), MAX_SEGMENT):
            self.frames += 1
            yield it.StreamData(conn, direction, data[at:at + MAX_SEGMENT], self.frames, time)
        if native is not None:
            native.consider_id(conn)


class ProxySource:
    """Forks the relay when made (before any thread starts); ``items`` reads it until it ends."""

    live = True

    def __init__(self, listen: Address, upstream: Address, options: RelayOptions | None = None, *,
                 log: Callable[[str], None] = _stderr) -> None:
        self.relay = RelayProcess(listen, upstream, options or RelayOptions())
        self.label = f"proxy {listen} → {upstream}"
        self.reader = TapReader(log)
        self.on_idle: Callable[[], None] = lambda: None  # called at least every FLUSH_EVERY seconds
        self._stops = 0

    def accelerate(self, engine: Engine) -> None:
        self.reader.accelerate(engine)

    def wait_ready(self) -> str | None:
        """None once the relay listens; otherwise why it cannot (and the relay is gone)."""
        problem = self.relay.wait_ready()
        if problem is not None:
            self.relay.stop()
            self.relay.wait()
            os.close(self.relay.fd)
        return problem

    def stop(self) -> None:
        """The relay ends its sessions (grace period) and closes the pipe; ``items`` then drains it.
        Asked again (a second Ctrl-C), it closes the sessions at once."""
        self._stops += 1
        self.relay.stop(now=self._stops > 1)

    def open_sessions(self) -> int:
        """Connections open as far as the records read so far tell."""
        return self.reader.open_count()

    def close_now(self) -> None:
        """Stop, closing open sessions at once (the terminal UI quitting after the user said so)."""
        self._stops += 1
        self.relay.stop(now=True)

    def items(self) -> Iterator[it.StreamItem]:
        try:
            yield from self.reader.items(tap.read_records(self.relay.fd, self.relay.ring, lambda: self.on_idle(),
                                                          FLUSH_EVERY))
        finally:
            self.relay.stop()
            self.relay.wait()
            os.close(self.relay.fd)

    def summary(self, result: Result) -> str:
        """The line the proxy prints on exit, as a command or under the terminal UI."""
        t = self.reader.totals
        moved = t.get("bytes", {})
        severities = Counter(a.severity for a in result.anomalies)
        findings = ", ".join(f"{severities[s]:,} info" if s == "info" else _plural(severities[s], s)
                             for s in ("error", "warning", "info"))
        return (f"nbdscope proxy: {_plural(t.get('sessions', len(result.sessions)), 'session')}, "
                f"{_plural(sum(s.messages for s in result.sessions), 'message')}, findings: {findings}; "
                f"{moved.get('c2s', 0)} bytes to the server, {moved.get('s2c', 0)} to clients, "
                f"{_plural(t.get('upstream_failures', 0), 'upstream failure')}; at exit "
                f"{_plural(t.get('left_open', 0), 'session')} and {_plural(t.get('left_tasks', 0), 'task')} "
                "were still open")


def _plural(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"
