"""Property tests: no byte stream makes the decoder raise, and buffered memory
never exceeds what actually arrived (a length field alone allocates nothing)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from tests import nbdwire as w
from tests.wirescripts import go_handshake

PIECES = [w.request(0, 1, 0, 512), w.request(1, 2, 0, 0xFFFFFFFF), w.simple_reply(1, 0, bytes(8)),
          w.chunk(1, 5, w.extents(7, [(1000, 0)]), 1), w.chunk(3, 1, b"\xff" * 3), w.option(7, b"\xff" * 9),
          w.opt_reply(7, 3, b"\x00\x00"), w.greeting_newstyle(), w.greeting_oldstyle(1 << 62, 0xFFFFFFFF),
          w.ext_request(7, 5, 0, 1 << 63, flags=0x20), w.ext_chunk(5, 6, 0, b"\x00" * 8, 1),
          w.chunk(9, 0x8001, b"\x00\x00\x00\x05\xff\xff")]

streams = st.lists(st.tuples(st.sampled_from(["c2s", "s2c"]),
                             st.one_of(st.binary(max_size=200), st.sampled_from(PIECES),
                                       st.integers(1, 5000).map(lambda n: n))), max_size=40)


def _drive(conn: Connection, script: list[tuple[str, object]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    fed = {"c2s": 0, "s2c": 0}
    for i, (direction, piece) in enumerate(script):
        if isinstance(piece, int):
            out += conn.gap(direction, piece, frame=i, time=i)  # type: ignore[arg-type]
            continue
        fed[direction] += len(piece)  # type: ignore[arg-type]
        out += conn.feed(direction, piece, frame=i, time=i)  # type: ignore[arg-type]
        assert len(conn._c.buf) <= fed["c2s"] and len(conn._s.buf) <= fed["s2c"]
    out += conn.close("rst", frame=len(script), time=len(script))
    assert isinstance(out[-1], ev.ConnectionEnd)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.booleans())
def test_random_streams_never_raise(script: list[tuple[str, object]], saw_start: bool) -> None:
    _drive(Connection(saw_start=saw_start), script)


SESSION = go_handshake() + [("c2s", w.request(0, 1, 0, 64)), ("s2c", w.chunk(1, 1, bytes(72), 1)),
                           ("c2s", w.request(7, 2, 0, 4096)), ("s2c", w.chunk(2, 5, w.extents(7, [(512, 3)]), 1))]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_session_never_raises(data: st.DataObject) -> None:
    script: list[tuple[str, object]] = []
    for direction, message in SESSION:
        blob = bytearray(message)
        if data.draw(st.booleans()):
            pos = data.draw(st.integers(0, len(blob) - 1))
            blob[pos] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(1, len(blob)))
        script += [(direction, bytes(blob[i:i + cut])) for i in range(0, len(blob), cut)]
    _drive(Connection(), script)
