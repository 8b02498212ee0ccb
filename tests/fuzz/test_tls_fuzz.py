"""Damaged TLS after STARTTLS, with the session's key log: bytes flipped, cut, added or replaced anywhere, fed in
any pieces, with gaps; decryption ends in a status and the decoder never raises (tests/tlsforge.py)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.tls.keylog import KeyLog
from tests import nbdwire as w
from tests.tlsforge import Forge, wrap
from tests.wirescripts import go_handshake

STARTTLS = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags() + w.option(5)), ("s2c", w.opt_reply(5, 1))]
INSIDE = go_handshake()[2:] + [("c2s", w.request(1, 1, 0, 600, data=b"x" * 600)), ("s2c", w.simple_reply(1)),
                               ("c2s", w.request(0, 2, 0, 300)), ("s2c", w.simple_reply(2, 0, b"y" * 300))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suite=st.sampled_from([0x1301, 0x1302, 0x1303, 0xC02F, 0xCCA8, 0x009D]), where=st.integers(3, 30),
       how=st.sampled_from(["flip", "cut", "add", "replace"]), at=st.integers(0, 10**6), junk=st.binary(min_size=1, max_size=64),
       piece=st.sampled_from([0, 1, 5, 700]), gap=st.booleans(), track=st.booleans())
def test_damaged_tls_never_raises(tmp_path: Path, suite: int, where: int, how: str, at: int, junk: bytes,
                                  piece: int, gap: bool, track: bool) -> None:
    forge = Forge(suite)
    (tmp_path / "k.log").write_text(forge.keylog())
    script = STARTTLS + wrap(forge, INSIDE)
    i = min(where, len(script) - 1)
    d, data = script[i]
    j = at % (len(data) + 1)
    data = {"flip": data[:j] + bytes([data[j] ^ 0x41]) + data[j + 1:] if j < len(data) else data + junk,
            "cut": data[:j], "add": data[:j] + junk + data[j:], "replace": junk}[how]
    script[i] = (d, data)
    conn = Connection(tls_keys=KeyLog(str(tmp_path / "k.log")), track_payload=track)
    events: list[ev.Event] = []
    for frame, (direction, chunk) in enumerate(script):
        for k in range(0, len(chunk), piece or len(chunk) or 1):
            events += conn.feed(direction, chunk[k:k + (piece or len(chunk))], frame=frame, time=0.0)  # type: ignore[arg-type]
            conn.take_payload_ranges(direction)  # type: ignore[arg-type]
        if gap and frame == i:
            events += conn.gap(direction, 7, frame=frame, time=0.0)  # type: ignore[arg-type]
    events += conn.close("fin", frame=len(script), time=1.0)
    marks = [e.decryption for e in events if isinstance(e, ev.TlsData) and e.decryption is not None]
    assert marks and set(marks) <= {"decrypted", "no-key", "undecryptable"} and marks.count("decrypted") <= 1
