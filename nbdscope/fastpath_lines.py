"""The JSONL lines of the messages the compiled path takes, as templates: the JSONL writer's own
output for messages whose variable fields hold sentinel values, cut at those values.

The Scanner (nbdscope/_fastpath.c) then writes a line by copying the literal pieces and printing
the numbers between them, so ``analyze --format jsonl`` does not fall back to Python for every
message, and the lines stay the writer's: a change to report/records.py changes the templates
with it. A template that does not reproduce the writer's line for a test message is not used (the
connection then stays in Python)."""

from __future__ import annotations

import re
from collections.abc import Callable

from nbdscope.decoder import events as ev
from nbdscope.report.records import message_json
from nbdscope.spec import Cmd, ReplyFlag, ReplyType

# the Scanner's field codes (enum F_* in _fastpath.c)
(END, FRAME, TIME, COOKIE, OFFSET, LENGTH, PAYLOAD, RFRAME, ROFFSET, RLENGTH, LATENCY, DATA, CHUNK_LENGTH,
 EPOCH) = range(14)
Template = tuple[tuple[bytes, int], ...]
_READ, _WRITE = int(Cmd.READ), int(Cmd.WRITE)
_DONE, _OFFSET_DATA = int(ReplyFlag.DONE), int(ReplyType.OFFSET_DATA)
_TIME, _LATENCY = 5555.5, 4444.5  # seconds after t0, microseconds: sentinels that print as themselves
Values = dict[int, float]
Maker = Callable[[str, Values, float], ev.Event]


def _request(cmd: int) -> Maker:
    def make(phase: str, v: Values, t0: float) -> ev.Event:
        payload = int(v[PAYLOAD]) if cmd == _WRITE else 0
        return ev.make_request("c2s", int(v[FRAME]), t0 + v[TIME], phase, None, 0, 0, 0, int(v[COOKIE]), cmd, 0,
                               int(v[OFFSET]), int(v[LENGTH]), False, payload, None, (), 28 if payload else None)
    return make


def _simple(cmd: int) -> Maker:
    def make(phase: str, v: Values, t0: float) -> ev.Event:
        return ev.make_simple_reply("s2c", int(v[FRAME]), t0 + v[TIME], phase, None, 0, 0, 0, int(v[COOKIE]), cmd,
                                    int(v[RFRAME]), int(v[ROFFSET]), int(v[RLENGTH]), 0, True, False, v[LATENCY],
                                    16 if v[DATA] else None, 0, int(v[DATA]))
    return make


def _chunk(phase: str, v: Values, t0: float) -> ev.Event:
    return ev.make_data_chunk("s2c", int(v[FRAME]), t0 + v[TIME], phase, None, 0, 0, 0, int(v[COOKIE]), _READ,
                              int(v[RFRAME]), int(v[ROFFSET]), int(v[RLENGTH]), 0, True, False, v[LATENCY], 28,
                              _OFFSET_DATA, _DONE, int(v[CHUNK_LENGTH]), False, None, int(v[OFFSET]), int(v[DATA]))


# in the Scanner's order of kinds (enum T_*): READ and WRITE requests, their simple replies, a READ's data chunk
KINDS: tuple[tuple[Maker, tuple[int, ...]], ...] = (
    (_request(_READ), (FRAME, TIME, EPOCH, COOKIE, OFFSET, LENGTH)),
    (_request(_WRITE), (FRAME, TIME, EPOCH, COOKIE, OFFSET, LENGTH, PAYLOAD)),
    (_simple(_READ), (FRAME, TIME, EPOCH, COOKIE, RFRAME, ROFFSET, RLENGTH, LATENCY, DATA)),
    (_simple(_WRITE), (FRAME, TIME, EPOCH, COOKIE, RFRAME, ROFFSET, RLENGTH, LATENCY, DATA)),
    (_chunk, (FRAME, TIME, EPOCH, COOKIE, RFRAME, ROFFSET, RLENGTH, LATENCY, DATA, OFFSET, CHUNK_LENGTH)),
)


def _epoch(t0: float, time: float) -> float:
    """The ``epoch`` of a line whose ``time`` is ``time`` (rounded as report/records.py does)."""
    return round((t0 + time) * 1e6) / 1e6


def _sentinels(fields: tuple[int, ...], t0: float) -> Values:
    return {f: (_TIME if f == TIME else _LATENCY if f == LATENCY else _epoch(t0, _TIME) if f == EPOCH
                else 9_100_000_000_000_000_000 + f) for f in fields}


def _cut(line: bytes, values: Values) -> Template | None:
    """The line cut at each sentinel (each must occur once as a whole JSON value), as (literal before, field)
    pieces."""
    found = []
    for field, value in values.items():
        token = repr(value).encode()
        hits = [m.start() for m in re.finditer(rb"(?<=:)" + re.escape(token) + rb"(?=[,}])", line)]
        if len(hits) != 1:
            return None
        found.append((hits[0], field, len(token)))
    pieces, at = [], 0
    for pos, field, n in sorted(found):
        pieces.append((line[at:pos], field))
        at = pos + n
    pieces.append((line[at:], END))
    return tuple(pieces)


def _fill(template: Template, values: Values) -> bytes:
    """What the Scanner writes (for the self-test; times and latencies here are already rounded)."""
    return b"".join(lit + (repr(values[f]).encode() if f != END else b"") for lit, f in template)


def templates(session: str, phase: str, t0: float) -> tuple[Template, ...] | None:
    """The five templates for one session's lines, or None when one cannot be made or does not check out."""
    out = []
    for make, fields in KINDS:
        sentinel = _sentinels(fields, t0)
        template = _cut(message_json(session, make(phase, sentinel, t0), t0), sentinel)
        if template is None:
            return None
        sample = {f: (0.25 if f == TIME else 123.4 if f == LATENCY else _epoch(t0, 0.25) if f == EPOCH
                      else 4096 + f) for f in fields}
        if _fill(template, sample) != message_json(session, make(phase, sample, t0), t0):
            return None
        out.append(template)
    return tuple(out)
