"""The decoder's events as values: frozen, hashable, numbered in order per connection;
and the state table covers every state change the handlers ask for."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.decoder import state as st
from nbdscope.tls.keylog import KeyLog
from tests import nbdwire as w
from tests.decoding import decode, items_of, script_items
from tests.oracles import CAPTURES
from tests.tlsforge import Forge, wrap
from tests.wirescripts import go_handshake

NAMES = sorted(p.name for p in CAPTURES.glob("*.pcap*"))
EVENT_CLASSES = [c for c in vars(ev).values() if isinstance(c, type) and issubclass(c, ev.Event)]


def test_script_items_builds_what_the_decoder_reads() -> None:
    events, _, fed = decode(script_items(go_handshake() + [("c2s", w.request(0, 1, 0, 8))]))
    assert any(isinstance(e, ev.Request) for e in events[1]) and fed[1, "c2s"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_event_is_hashable_and_refuses_assignment(name: str) -> None:
    events, _, _ = decode(items_of(name), keep_data=True, keep_headers=True)
    seen = [e for es in events.values() for e in es]
    assert seen
    assert len({hash(e) for e in seen}) > 1
    for e in seen:
        assert e == dataclasses.replace(e) and hash(e) == hash(dataclasses.replace(e))
        for f in dataclasses.fields(e):
            with pytest.raises(AttributeError):
                setattr(e, f.name, getattr(e, f.name))
        with pytest.raises(AttributeError):
            e.extra = 1  # type: ignore[attr-defined]


def test_events_compare_by_class_and_value() -> None:
    base = dict(dir="s2c", frame=1, time=0.0, phase="transmission", seq=0, start=0, end=0)
    gap = ev.Gap(**base, nbytes=3, resync=False)  # type: ignore[arg-type]
    assert gap == ev.Gap(**base, nbytes=3, resync=False)  # type: ignore[arg-type]
    assert gap != ev.Gap(**base, nbytes=4, resync=False)  # type: ignore[arg-type]
    assert gap != ev.TlsData(**base, nbytes=3) and gap != tuple(gap)  # type: ignore[arg-type]
    bad = ev.Malformed(**base, what="bad-magic", message="m", values=(("magic", 5),))  # type: ignore[arg-type]
    assert {bad: 1}[bad] == 1
    with pytest.raises(TypeError):
        _ = gap < gap  # type: ignore[operator]


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_event_classes_are_dataclasses_with_positions_first(cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    assert names[:8] == ["dir", "frame", "time", "phase", "header", "seq", "start", "end"]
    assert cls.__match_args__ == tuple(names)  # type: ignore[attr-defined]


@pytest.mark.parametrize("make, cls", [(ev.make_request, ev.Request), (ev.make_simple_reply, ev.SimpleReply),
                                       (ev.make_data_chunk, ev.ReplyChunk)])
def test_positional_builders_take_fields_in_order(make: object, cls: type) -> None:
    params = list(inspect.signature(make).parameters)  # type: ignore[arg-type]
    assert params == [f.name for f in dataclasses.fields(cls)][:len(params)]
    values = {f.name: i for i, f in enumerate(dataclasses.fields(cls))}
    assert make(*(values[p] for p in params)) == cls(**{p: values[p] for p in params})  # type: ignore[operator]


@pytest.mark.parametrize("name", NAMES)
def test_seq_counts_up_by_one_per_connection(name: str) -> None:
    events, _, _ = decode(items_of(name), keep_data=True)
    for es in events.values():
        assert [e.seq for e in es] == list(range(len(es)))


# ------------------------------------------------------------------ the state table


def test_table_rows_are_states_of_their_side() -> None:
    sides = {"c2s": st.CLIENT_STATES, "s2c": st.SERVER_STATES}
    for (origin, _what, moved, state), new in st.TRANSITIONS.items():
        assert origin in sides and state in sides[moved] and new in sides[moved]
    used = {what for (_, what, _, _) in st.TRANSITIONS}
    assert used == set(st.Input)


def test_every_state_has_a_handler() -> None:
    conn = Connection()
    assert set(conn.machine.handlers) == set(st.State)


class Recorder:
    """Wraps Machine.fire: notes each (where, input, state there) the handlers ask for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: set[tuple[str, st.Input, st.State]] = set()
        fire = st.Machine.fire

        def recording(machine: st.Machine, what: st.Input, side: object) -> None:
            self.asked.add((side.dir, what, side.state))  # type: ignore[attr-defined]
            fire(machine, what, side)  # type: ignore[arg-type]
        monkeypatch.setattr(st.Machine, "fire", recording)

    def missing(self) -> set[tuple[str, st.Input, st.State]]:
        return {(d, what, s) for d, what, s in self.asked if (d, what, d, s) not in st.TRANSITIONS}


GARBLED = [w.greeting_newstyle() + b"\x00" * 3, w.request(0, 1, 0, 8)[:20] + w.request(0, 2, 0, 8),
           b"\x16\x03\x01\x00\x10" + bytes(16), w.option(7)[:6] + w.option(3), w.simple_reply(9, 0, b"x" * 9),
           w.opt_reply(7, 1), w.chunk(4, 1, bytes(20), 1), w.greeting_oldstyle(1 << 20, 3)]


def _decrypt_and_give_up(tmp_path: Path) -> None:
    """A forged TLS session decrypted with its key log (tests/tlsforge.py), then a damaged record."""
    forge = Forge(0x1301)
    (tmp_path / "keys.log").write_text(forge.keylog())
    script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags() + w.option(5)), ("s2c", w.opt_reply(5, 1))]
    script += wrap(forge, go_handshake()[2:] + [("c2s", w.request(0, 1, 0, 8))]) + [("s2c", b"\x17\x03\x03\x00\x20" + bytes(32))]
    conn = Connection(tls_keys=KeyLog(str(tmp_path / "keys.log")))
    for frame, (d, data) in enumerate(script):
        conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]


def test_every_transition_the_handlers_reach_is_in_the_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = Recorder(monkeypatch)
    for name in NAMES:
        decode(items_of(name))
    scripts = [go_handshake(), go_handshake(structured=False)]
    scripts += [[("s2c", w.greeting_oldstyle(1 << 20, 3)), ("c2s", w.request(0, 1, 0, 8)),
                 ("s2c", w.simple_reply(1, 0, bytes(8)))]]
    scripts += [[("s2c", w.greeting_newstyle()), ("c2s", w.client_flags() + w.option(5)), ("s2c", w.opt_reply(5, 1)),
                 ("c2s", b"\x16\x03\x01\x00\x05hello"), ("s2c", b"\x16\x03\x03\x00\x02hi")]]
    scripts += [[(d, piece)] for piece in GARBLED for d in ("c2s", "s2c")]
    scripts += [go_handshake() + [(d, piece)] for piece in GARBLED for d in ("c2s", "s2c")]
    # a capture that began after the handshake: an option, then requests / an option reply, then replies
    scripts += [[("s2c", w.simple_reply(9, 1)), ("c2s", w.option(3) + w.request(0, 1, 0, 8))],
                [("c2s", w.request(0, 1, 0, 8)), ("s2c", w.opt_reply(3, 1) + w.simple_reply(1, 0, bytes(8)))]]
    for script in scripts:
        for saw_start, gaps in ((True, False), (False, False), (True, True), (False, True)):
            conn = Connection(saw_start=saw_start)
            for frame, (d, data) in enumerate(script):
                conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]
                if gaps:
                    conn.gap(d, 5, frame=frame, time=0.0)  # type: ignore[arg-type]
                    conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]
            conn.close("fin", frame=0, time=0.0)
    _decrypt_and_give_up(tmp_path)
    assert rec.asked and not rec.missing()
    reached = {(d, what) for d, what, _ in rec.asked}
    assert {what for _, what in reached} == set(st.Input)  # the scripts exercise every input


def test_a_transition_missing_from_the_table_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    monkeypatch.delitem(st.TRANSITIONS, ("c2s", st.Input.CLIENT_FLAGS, "c2s", st.State.CLIENT_FLAGS))
    conn = Connection()
    for d, data in go_handshake():
        conn.feed(d, data, frame=0, time=0.0)  # type: ignore[arg-type]
    assert rec.missing() == {("c2s", st.Input.CLIENT_FLAGS, st.State.CLIENT_FLAGS)}
