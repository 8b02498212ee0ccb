"""The filter language (nbdscope/filter) on real decoded captures: each term is checked
against facts read straight off the decoder events and findings, not through the
filter's own accessors; then precedence, errors with their column, and the help."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Engine
from nbdscope.analysis.session import Session
from nbdscope.capture import read_captures
from nbdscope.decoder import events as ev
from nbdscope.filter import FilterError, compile, help_markdown, help_rows, help_text
from nbdscope.filter import terms as T
from nbdscope.filter.help import VALUE_KINDS
from nbdscope.report.records import message_record
from nbdscope.spec import Cmd, Errno, Opt, ReplyType

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ("client-misbehaves-nbdsh.pcap", "seed-cache-flag.pcap", "seed-unaligned-extent.pcap",
            "fio-iodepth8.pcap", "tls-psk.pcap")


@dataclass
class Msg:
    capture: str
    session: Session
    event: ev.Event
    t0: float
    findings: list[Anomaly] = field(default_factory=list)


class _Collect(Addon):
    def __init__(self, name: str, msgs: list[Msg]) -> None:
        self.name_, self.msgs = name, msgs

    def message(self, session: Session, event: ev.Event) -> None:
        self.msgs.append(Msg(self.name_, session, event, 0.0))

    def finding(self, anomaly: Anomaly) -> None:
        _attach(self.msgs, anomaly)


def _decode(captures: Path, name: str) -> list[Msg]:
    msgs: list[Msg] = []
    engine = Engine([_Collect(name, msgs)])
    engine.run(read_captures([str(captures / name)]))
    for m in msgs:
        m.t0 = engine.t0()
    return msgs


def _attach(msgs: list[Msg], a: Anomaly) -> None:
    """A finding belongs to the newest message of its session that ends in its frame."""
    for m in reversed(msgs):
        if m.session.id == a.session and m.event.frame == a.frame:
            m.findings.append(a)
            return


@pytest.fixture(scope="module")
def msgs(captures: Path) -> list[Msg]:
    out = [m for name in CAPTURES for m in _decode(captures, name)]
    assert len(out) > 500
    return out


def select(msgs: list[Msg], expr: str) -> list[int]:
    preds = {name: compile(expr, t0=lambda name=name: next(m.t0 for m in msgs if m.capture == name))
             for name in CAPTURES}
    return [i for i, m in enumerate(msgs) if preds[m.capture](m.session, m.event, m.findings)]


def where(msgs: list[Msg], test) -> list[int]:  # type: ignore[no-untyped-def]
    got = [i for i, m in enumerate(msgs) if test(m)]
    assert got, "the capture set must have such messages, or the check proves nothing"
    return got


def is_cmd(e: ev.Event, cmd: int) -> bool:
    return isinstance(e, ev.Request | ev.Reply) and e.command == cmd


# ------------------------------------------------------------------ fields


def test_cmd_type_and_words_for_names(msgs) -> None:  # type: ignore[no-untyped-def]
    reads = where(msgs, lambda m: is_cmd(m.event, Cmd.READ))
    assert select(msgs, "cmd=READ") == reads == select(msgs, "command=read") == select(msgs, "cmd=NBD_CMD_READ")
    assert select(msgs, "cmd=read requests") == where(
        msgs, lambda m: isinstance(m.event, ev.Request) and m.event.command == Cmd.READ)
    assert select(msgs, "cmd!=read") == [i for i in range(len(msgs)) if i not in reads]
    assert select(msgs, "type=OFFSET_DATA") == where(
        msgs, lambda m: isinstance(m.event, ev.ReplyChunk) and m.event.reply_type == ReplyType.OFFSET_DATA)
    # a free word: the option request NBD_OPT_GO is the only message whose name holds OPT_GO
    assert select(msgs, "opt_go") == where(
        msgs, lambda m: isinstance(m.event, ev.OptionRequest) and m.event.option == Opt.GO)
    cache = where(msgs, lambda m: is_cmd(m.event, Cmd.CACHE))
    assert select(msgs, "cache") == cache  # no other message type has CACHE in its name


def test_direction_session_and_phase(msgs) -> None:  # type: ignore[no-untyped-def]
    c2s = where(msgs, lambda m: m.event.dir == "c2s")
    assert select(msgs, "dir=c2s") == select(msgs, "c2s") == select(msgs, "dir=client") == c2s
    assert select(msgs, "dir=s2c") == select(msgs, "s2c") == where(msgs, lambda m: m.event.dir == "s2c")
    assert select(msgs, "dir=<-") == select(msgs, "s2c")
    s2 = where(msgs, lambda m: m.session.id == "s2")
    assert select(msgs, "session=s2") == select(msgs, "s=2") == select(msgs, "s2") == select(msgs, "S2") == s2
    assert select(msgs, "handshake") == where(msgs, lambda m: m.event.phase == "handshake")
    assert select(msgs, "transmission") == where(msgs, lambda m: m.event.phase == "transmission")
    assert select(msgs, "requests") == select(msgs, "req") == where(msgs, lambda m: isinstance(m.event, ev.Request))
    assert select(msgs, "replies") == where(msgs, lambda m: isinstance(m.event, ev.Reply))


def test_numbers_units_and_comparisons(msgs) -> None:  # type: ignore[no-untyped-def]
    requests = [m.event for m in msgs if isinstance(m.event, ev.Request)]
    big = where(msgs, lambda m: isinstance(m.event, ev.Request) and m.event.length > 4096)
    assert select(msgs, "requests length>4096") == select(msgs, "req len>4K") == big
    assert select(msgs, "requests length>=0x1001") == big
    small = where(msgs, lambda m: isinstance(m.event, ev.Request) and m.event.length == 512)
    assert select(msgs, "requests length=512") == select(msgs, "requests length=0.5K") == small
    assert select(msgs, "requests length=0x200") == small
    mid = sorted({r.offset for r in requests})[len(requests) // 4]
    assert select(msgs, f"requests offset<{mid}") == where(
        msgs, lambda m: isinstance(m.event, ev.Request) and m.event.offset < mid)
    assert select(msgs, f"requests offset=0..{mid}") == where(
        msgs, lambda m: isinstance(m.event, ev.Request) and 0 <= m.event.offset <= mid)
    # a reply without an offset of its own is placed at its request's offset
    assert select(msgs, f"type=SIMPLE_REPLY offset<={mid}") == where(
        msgs, lambda m: isinstance(m.event, ev.SimpleReply) and m.event.request_offset is not None
        and m.event.request_offset <= mid)
    # messages without the quantity: no comparison selects them, but != does
    no_offset = where(msgs, lambda m: m.event.phase == "handshake")
    assert set(no_offset) <= set(select(msgs, "offset!=0")) and not set(no_offset) & set(select(msgs, "offset>=0"))
    cookie = requests[7].cookie
    assert select(msgs, f"cookie={cookie:#x}") == where(
        msgs, lambda m: isinstance(m.event, ev.Request | ev.Reply) and m.event.cookie == cookie)
    assert select(msgs, "frame=10..20") == where(msgs, lambda m: 10 <= m.event.frame <= 20)
    assert select(msgs, "frame>20") == where(msgs, lambda m: m.event.frame > 20)
    assert select(msgs, "tls length=100..200") == where(
        msgs, lambda m: isinstance(m.event, ev.TlsData) and 100 <= m.event.nbytes <= 200)


def test_time_counts_from_the_given_origin(msgs) -> None:  # type: ignore[no-untyped-def]
    fio = [m for m in msgs if m.capture == "fio-iodepth8.pcap"]
    cut = sorted(m.event.time - m.t0 for m in fio)[len(fio) // 2]
    got = select(msgs, f"time>{cut!r}")
    assert got == where(msgs, lambda m: m.event.time - m.t0 > cut)
    assert 0 < len([i for i in got if msgs[i].capture == "fio-iodepth8.pcap"]) < len(fio)
    # without an origin, times are the capture's own timestamps
    e = fio[0]
    assert compile(f"time>={e.event.time!r}")(e.session, e.event, ()) and not compile(f"time<{e.event.time!r}")(
        e.session, e.event, ())


def test_latency(msgs) -> None:  # type: ignore[no-untyped-def]
    lat = sorted(m.event.latency_us for m in msgs if isinstance(m.event, ev.Reply) and m.event.latency_us)
    cut = lat[len(lat) // 2]
    assert select(msgs, f"latency>{cut!r}") == where(
        msgs, lambda m: isinstance(m.event, ev.Reply) and m.event.latency_us is not None and m.event.latency_us > cut)


def test_range_overlap(msgs) -> None:  # type: ignore[no-untyped-def]
    def overlaps(e: ev.Request, low: int, high: int) -> bool:
        return e.offset <= high and e.offset + max(e.length, 1) > low

    for low, high in ((0, 511), (512, 1023), (4096, 65535), (1 << 20, 2 << 20)):
        expected = [i for i, m in enumerate(msgs) if isinstance(m.event, ev.Request) and overlaps(m.event, low, high)]
        assert select(msgs, f"requests range={low}..{high}") == expected
        assert set(select(msgs, f"range!={low}..{high}")) == set(range(len(msgs))) - set(select(
            msgs, f"range={low}..{high}"))
    assert select(msgs, "requests range=0..511")  # some request touches the first sector


def test_errors_and_error_values(msgs) -> None:  # type: ignore[no-untyped-def]
    def is_error(e: ev.Event) -> bool:
        """From the message as the JSONL shows it: an error value other than 0, a reply marked failed, an
        option reply of the NBD_REP_ERR_ family, or broken bytes."""
        rec = message_record("s", e, 0.0)
        return bool(rec.get("error") or rec.get("failed") or str(rec["type"]).startswith("NBD_REP_ERR_")
                    or rec["type"] == "MALFORMED")

    errors = where(msgs, lambda m: is_error(m.event))
    assert select(msgs, "errors") == select(msgs, "error") == select(msgs, "error=any") == errors
    einval = where(msgs, lambda m: isinstance(m.event, ev.SimpleReply | ev.ReplyChunk) and m.event.error == Errno.EINVAL)
    assert any(isinstance(msgs[i].event, ev.ReplyChunk) for i in einval)  # an error chunk as well as simple replies
    assert select(msgs, "error=EINVAL") == select(msgs, "error=22") == select(msgs, "error=NBD_EINVAL") == einval
    assert set(select(msgs, "error!=EINVAL")) == set(range(len(msgs))) - set(einval)


def test_findings_rule_and_severity(msgs) -> None:  # type: ignore[no-untyped-def]
    rank = {"info": 0, "warning": 1, "error": 2}
    assert select(msgs, "anomalies") == select(msgs, "bad") == where(msgs, lambda m: bool(m.findings))
    assert select(msgs, "rule=unaligned-extent") == where(
        msgs, lambda m: any(a.rule == "unaligned-extent" for a in m.findings))
    for sev in ("warning", "error"):
        assert select(msgs, f"severity={sev}") == where(
            msgs, lambda m, sev=sev: bool(m.findings) and max(rank[a.severity] for a in m.findings) == rank[sev])
    # the predicate reads the findings it is given, not anything stored
    m = msgs[0]
    fake = Anomaly(rule="unaligned-extent", severity="info", blame="server", session=m.session.id, frame=m.event.frame,
                   time=0.0, message="", spec="")
    assert compile("rule=unaligned-extent and severity=info")(m.session, m.event, [fake])
    assert not compile("anomalies")(m.session, m.event, [])
    worse = Anomaly(rule="cookie-reuse", severity="error", blame="client", session=m.session.id, frame=m.event.frame,
                    time=0.0, message="", spec="")
    assert compile("severity=error")(m.session, m.event, [fake, worse])
    assert not compile("severity=info")(m.session, m.event, [fake, worse])  # the worst finding counts


def test_errors_no_capture_shows() -> None:
    """Broken bytes, and a reply whose error came in an earlier chunk, are errors too (no shipped capture has them)."""
    session = Session(id="s1", client=None, server=None, source="", first_frame=0, saw_start=True)  # type: ignore[arg-type]
    done = ev.ReplyChunk(dir="s2c", frame=9, time=0.0, phase="transmission", seq=0, start=0, end=0, cookie=1, reply_type=ReplyType.NONE,
                         flags=1, length=0, extended=False, failed=True)
    broken = ev.Malformed(dir="s2c", frame=9, time=0.0, phase="transmission", seq=0, start=0, end=0, what="bad-magic", message="")
    fine = ev.ReplyChunk(dir="s2c", frame=9, time=0.0, phase="transmission", seq=0, start=0, end=0, cookie=1, reply_type=ReplyType.NONE,
                         flags=1, length=0, extended=False)
    errors = compile("errors")
    assert errors(session, done, ()) and errors(session, broken, ()) and not errors(session, fine, ())


# ------------------------------------------------------------------ combining


def test_precedence_of_not_and_or(msgs) -> None:  # type: ignore[no-untyped-def]
    every = set(range(len(msgs)))
    a, b, c = (set(select(msgs, x)) for x in ("cmd=write", "cmd=read", "requests"))
    assert a and b and c
    assert set(select(msgs, "cmd=write or cmd=read requests")) == a | (b & c)
    assert set(select(msgs, "cmd=write or cmd=read and requests")) == a | (b & c)
    assert set(select(msgs, "(cmd=write or cmd=read) and requests")) == (a | b) & c
    assert set(select(msgs, "requests and cmd=read or cmd=write")) == (c & b) | a
    assert set(select(msgs, "not cmd=read and requests")) == (every - b) & c
    assert set(select(msgs, "!cmd=read requests")) == (every - b) & c
    assert set(select(msgs, "not (cmd=read and requests)")) == every - (b & c)
    assert set(select(msgs, "not not cmd=read")) == b
    assert select(msgs, "   ") == list(range(len(msgs)))


@pytest.mark.parametrize("expr,column,reason", [
    ("cookie=", 8, "ends too early"),
    ("cmd=nosuch", 5, "unknown command"),
    ("s2 bogus=1", 4, "unknown field 'bogus'"),
    ("offset=abc", 8, "not a number"),
    ("(read", 6, r"missing \) for the \( at column 1"),
    ("(read or (write)", 17, r"missing \) for the \( at column 1"),
    ("read)", 5, r"unexpected \)"),
    ("requests offset", 10, "needs a comparison"),
    ("dir=up", 5, "c2s or s2c"),
    ("offset=9..1", 8, "empty range"),
    ("cmd>read", 4, "compares only with = or !="),
    ("read or or write", 9, "term is missing before 'or'"),
    ("read and", 9, "ends too early"),
    ("=5", 1, "field name must come before ="),
    ("severity=bad", 10, "info, warning or error"),
    ("rule=no-such-rule", 6, "unknown rule"),
    ("error=EWHAT", 7, "unknown error"),
    ("range<5", 6, "compares only with"),
    ("cookie=)", 8, "a value must follow cookie="),
])
def test_errors_say_where(expr: str, column: int, reason: str) -> None:
    with pytest.raises(FilterError, match=reason) as info:
        compile(expr)
    assert info.value.position == column - 1
    assert str(info.value).startswith(f"column {column}: ") and "\n" not in str(info.value)


# ------------------------------------------------------------------ help


def test_help_rows_and_definitions_match() -> None:
    rows = help_rows()
    defined = [*T.FIELDS, *T.WORDS]
    assert [r.term.split("=")[0].split(" ")[0] for r in rows] == [t.name for t in defined]
    assert [r.aliases for r in rows] == [t.aliases for t in defined]
    assert [r.matches for r in rows] == [t.help for t in defined]
    field_names = [n for t in T.FIELDS for n in t.names]
    word_names = [n for t in T.WORDS for n in t.names]
    assert len(set(field_names)) == len(field_names) and len(set(word_names)) == len(word_names)
    assert set(field_names) & set(word_names) == {"error"}  # error=EINVAL, and the word error (= errors)
    text = help_text()
    for t in defined:
        assert t.help.split()[0] in text
        for n in t.names:
            assert re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text), n
    for kind in {f.value for f in T.FIELDS}:
        assert kind in VALUE_KINDS and kind.name in text
    for expr, _what in T.EXAMPLES:
        compile(expr)
        assert expr in text


def test_every_documented_term_compiles() -> None:
    """Each name, alias and example in the help works; a field name alone asks for a comparison."""
    words = {n for w in T.WORDS for n in w.names}
    for f in T.FIELDS:
        for n in f.names:
            compile(f.example.replace(f.name, n, 1))
            if n not in words:
                with pytest.raises(FilterError, match="needs a comparison"):
                    compile(n)
    for w in T.WORDS:
        for example in w.example.split(","):
            compile(example.strip())
        for n in w.names:
            if isinstance(w, T.Word):
                assert T.word_for(n) is w and T.word_for(n.upper()) is w


def test_docs_are_generated_from_the_definitions() -> None:
    spec = importlib.util.spec_from_file_location("gen_filter_doc", ROOT / "scripts" / "gen_filter_doc.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    on_disk = (ROOT / "docs" / "FILTER.md").read_text(encoding="utf-8")
    assert on_disk == gen.document(), "docs/FILTER.md is stale: run scripts/gen_filter_doc.py"
    for r in help_rows():
        assert f"`{r.term}`" in on_disk
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/FILTER.md" in readme and "| `cmd=write` |" not in readme  # one place, not a second copy


def test_tui_help_screen_shows_the_generated_help() -> None:
    from nbdscope.tui.help import HELP

    assert help_markdown("## Filter language (filter bar and search)") in HELP
