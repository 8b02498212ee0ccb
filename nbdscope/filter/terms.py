"""Every term of the filter language, each defined once: its name, aliases, the kind
of value it takes, a one-line help text and what it matches. The parser looks terms
up here and the help is generated from here, so the two cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from nbdscope.analysis.anomaly import SEVERITY_RANK, Anomaly
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.filter import values as V
from nbdscope.filter.message import command, command_name, cookie, error, is_error, latency, length, offset, type_name

Predicate = Callable[[Session, ev.Event, Sequence[Anomaly]], bool]
Getter = Callable[[ev.Event], float | None]
EQUALITY = ("=", "!=")
ORDERED = ("=", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Context:
    """What some terms need beyond the message: the time the view counts seconds from."""

    t0: Callable[[], float]


@dataclass(frozen=True)
class Term:
    name: str
    aliases: tuple[str, ...]
    help: str
    example: str

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class MatchField(Term):
    """A field tested for a match: `=` selects the messages that match, `!=` the others."""

    value: V.ValueKind
    match: Callable[[Any, Context], Predicate]
    ops: ClassVar[tuple[str, ...]] = EQUALITY

    def predicate(self, op: str, value: Any, ctx: Context) -> Predicate:
        pred = self.match(value, ctx)
        return pred if op == "=" else _negate(pred)


@dataclass(frozen=True)
class NumberField(Term):
    """A number compared with every operator; `=` with A..B is an inclusive range. Messages
    without the quantity match only `!=`."""

    get: Callable[[Context], Getter]
    value: ClassVar[V.ValueKind] = V.NUMBER
    ops: ClassVar[tuple[str, ...]] = ORDERED

    def predicate(self, op: str, value: tuple[float, float], ctx: Context) -> Predicate:
        get, (low, high) = self.get(ctx), value
        test: Callable[[float | None], bool] = {
            "=": lambda v: v is not None and low <= v <= high,
            "!=": lambda v: v is None or not low <= v <= high,
            "<": lambda v: v is not None and v < low,
            "<=": lambda v: v is not None and v <= high,
            ">": lambda v: v is not None and v > high,
            ">=": lambda v: v is not None and v >= low,
        }[op]
        return lambda s, e, f: test(get(e))


Field = MatchField | NumberField


@dataclass(frozen=True)
class Word(Term):
    """A term that stands alone."""

    test: Predicate

    def accepts(self, word: str) -> bool:
        return word in self.names

    def predicate(self, word: str) -> Predicate:
        return self.test


@dataclass(frozen=True)
class PatternWord(Term):
    """A family of standalone words (s2, s17) or, last, any other word."""

    pattern: str
    build: Callable[[str], Predicate]

    def accepts(self, word: str) -> bool:
        return re.fullmatch(self.pattern, word) is not None

    def predicate(self, word: str) -> Predicate:
        return self.build(word)


def _negate(pred: Predicate) -> Predicate:
    return lambda s, e, f: not pred(s, e, f)


def _overlaps(span: tuple[float, float], ctx: Context) -> Predicate:
    low, high = span

    def overlaps(s: Session, e: ev.Event, f: Sequence[Anomaly]) -> bool:
        off = offset(e)
        return off is not None and off <= high and off + max(length(e) or 0, 1) > low

    return overlaps


def _error(value: int | str, ctx: Context) -> Predicate:
    if value == V.ANY_ERROR:
        return lambda s, e, f: is_error(e)
    return lambda s, e, f: error(e) == value


def _worst(rank: int, ctx: Context) -> Predicate:
    return lambda s, e, f: bool(f) and max(SEVERITY_RANK[a.severity] for a in f) == rank


def _contains(needle: str) -> Predicate:
    return lambda s, e, f: needle in type_name(e) or needle in (command_name(e) or "")


def _phase(phase: str) -> Predicate:
    return lambda s, e, f: e.phase == phase


def _direction(d: str) -> Predicate:
    return lambda s, e, f: e.dir == d


FIELDS: tuple[Field, ...] = (
    MatchField("type", (), "the message type contains the text", "type=OFFSET_DATA", V.TEXT,
               lambda v, c: lambda s, e, f: v in type_name(e)),
    MatchField("cmd", ("command",), "requests of that command and every reply to them", "cmd=write", V.COMMAND,
               lambda v, c: lambda s, e, f: command(e) == v),
    MatchField("dir", (), "the direction the message travels", "dir=c2s", V.DIRECTION,
               lambda v, c: _direction(v)),
    MatchField("session", ("s",), "the messages of one session", "session=s2", V.SESSION,
               lambda v, c: lambda s, e, f: s.id == v),
    NumberField("cookie", (), "the cookie of a request or reply", "cookie=0x1f", lambda c: cookie),
    NumberField("offset", (), "the offset; a reply has its chunk's own offset, else its request's", "offset>=1G",
                lambda c: offset),
    NumberField("length", ("len",), "the length: of a request, its length field; of a reply, the data it carries, "
                "else its request's; of options, TLS data and gaps, their bytes", "length>65536", lambda c: length),
    MatchField("range", (), "the bytes the message covers overlap the range", "range=1M..2M", V.RANGE, _overlaps),
    NumberField("frame", (), "the capture frame the message ends in", "frame=120..180", lambda c: lambda e: e.frame),
    NumberField("time", (), "seconds since the first packet", "time>2.5", lambda c: lambda e: e.time - c.t0()),
    NumberField("latency", (), "reply latency in microseconds, on the message that completes a reply",
                "latency>1000", lambda c: latency),
    MatchField("error", (), "replies with that error; error=any is the word errors", "error=EINVAL",
               V.ERROR, _error),
    MatchField("rule", (), "messages with a finding of that rule", "rule=unaligned-extent", V.RULE,
               lambda v, c: lambda s, e, f: any(a.rule == v for a in f)),
    MatchField("severity", (), "messages whose worst finding has that severity", "severity=warning", V.SEVERITY,
               _worst),
)

WORDS: tuple[Word | PatternWord, ...] = (
    Word("errors", ("error", "err"), "replies with an error, option replies of the error kind, malformed bytes",
         "errors", lambda s, e, f: is_error(e)),
    Word("anomalies", ("anomaly", "anomalous", "bad"), "messages with findings", "anomalies",
         lambda s, e, f: bool(f)),
    Word("requests", ("request", "req"), "transmission requests", "requests",
         lambda s, e, f: isinstance(e, ev.Request)),
    Word("replies", ("reply",), "transmission replies and reply chunks", "replies",
         lambda s, e, f: isinstance(e, ev.Reply)),
    Word("handshake", (), "messages of the handshake phase", "handshake", _phase("handshake")),
    Word("transmission", (), "messages of the transmission phase", "transmission", _phase("transmission")),
    Word("c2s", (), "client to server, as dir=c2s", "c2s", _direction("c2s")),
    Word("s2c", (), "server to client, as dir=s2c", "s2c", _direction("s2c")),
    PatternWord("sN", (), "one session, as session=sN", "s2", r"s\d+",
                lambda w: lambda s, e, f: s.id == w),
    PatternWord("WORD", (), "any other word: the message type or command name contains it",
                "read, block_status, opt_go", r".+", lambda w: _contains(w.upper())),
)

KEYWORDS = ("and", "or", "not")

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("cmd=read latency>5000", "slow reads"),
    ("s2 and (errors or anomalies)", "what went wrong in session s2"),
    ("range=0..4K and cmd=write", "writes touching the first 4 KiB, and their replies"),
    ("not transmission", "the handshakes"),
)

_FIELD_BY_NAME = {n: fld for fld in FIELDS for n in fld.names}


def field_named(name: str) -> Field | None:
    return _FIELD_BY_NAME.get(name.lower())


def word_for(word: str) -> Word | PatternWord | None:
    """The standalone term a word is (None for a field name or keyword, which cannot stand alone)."""
    w = word.lower()
    fixed = [t for t in WORDS if isinstance(t, Word)]
    for t in fixed:
        if t.accepts(w):
            return t
    if w in _FIELD_BY_NAME or w in KEYWORDS:
        return None
    return next(t for t in WORDS if isinstance(t, PatternWord) and t.accepts(w))
