"""Decryption with a key log (nbdscope/tls, decoder/decrypted.py), on forged TLS sessions (tests/tlsforge.py):
the NBD inside TLS decodes to the same messages as the same NBD in plaintext, for every suite; key updates,
damaged records, lost bytes, missing and wrong keys end in a status, never an exception."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.spec.tlswire import SUITES
from nbdscope.tls import schedule
from nbdscope.tls.keylog import KeyLog
from tests import nbdwire as w
from tests.tlsforge import Forge, Script, record, wrap
from tests.wirescripts import go_handshake, of

STARTTLS: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()), ("c2s", w.option(5)),
                    ("s2c", w.opt_reply(5, 1))]
TRANSMISSION: Script = [("c2s", w.request(1, 1, 0, 4096, data=b"w" * 4096)), ("s2c", w.simple_reply(1)),
                        ("c2s", w.request(0, 2, 4096, 20000)), ("s2c", w.simple_reply(2, 0, b"r" * 20000)),
                        ("c2s", w.request(2, 3, 0, 0))]
INSIDE = go_handshake()[2:] + TRANSMISSION  # what the client and server say once TLS is up


def decode(script: Script, keys: KeyLog | None, pieces: int = 0) -> list[ev.Event]:
    conn = Connection(tls_keys=keys)
    out: list[ev.Event] = []
    for frame, (d, data) in enumerate(script, 1):
        if pieces:
            for i in range(0, len(data), pieces):
                out += conn.feed(d, data[i:i + pieces], frame=frame, time=frame / 1000)  # type: ignore[arg-type]
        else:
            out += conn.feed(d, data, frame=frame, time=frame / 1000)  # type: ignore[arg-type]
    return out + conn.close("fin", frame=len(script) + 1, time=1.0)


def nbd(events: list[ev.Event]) -> list[tuple[object, ...]]:
    """The NBD messages, without what depends on framing (frames, offsets, TLS counting)."""
    skip = (ev.TlsData, ev.TlsStart, ev.ConnectionEnd)
    return [(type(e).__name__, e.dir, getattr(e, "option", None), getattr(e, "reply", None),
             getattr(e, "command", None), getattr(e, "offset", None), getattr(e, "length", None),
             getattr(e, "cookie", None)) for e in events if not isinstance(e, skip)]


def keylog(tmp_path: Path, text: str, name: str = "keys.log") -> KeyLog:
    path = tmp_path / name
    path.write_text(text)
    return KeyLog(str(path))


def status(events: list[ev.Event]) -> list[tuple[str | None, str | None]]:
    return [(e.decryption, e.detail) for e in of(events, ev.TlsData) if e.decryption is not None]


@pytest.mark.parametrize("suite", sorted(SUITES), ids=lambda c: SUITES[c].name)
def test_every_suite_decodes_like_plaintext(tmp_path: Path, suite: int) -> None:
    forge = Forge(suite)
    script = STARTTLS + wrap(forge, INSIDE)
    events = decode(script, keylog(tmp_path, forge.keylog()))
    plain = decode(STARTTLS[:2] + INSIDE, None)  # the same options and requests, never encrypted
    assert nbd(events)[4:] == nbd(plain)[2:] and len(nbd(plain)) > 12  # (past the greeting, flags, STARTTLS)
    version = "TLS 1.3" if SUITES[suite].tls13 else "TLS 1.2"
    assert status(events) == [("decrypted", f"{version}, {SUITES[suite].name}")]
    go = of(events, ev.TransmissionStart)[0]
    assert go.structured_replies and go.meta_contexts == ((7, "base:allocation"),) and go.export_name == "disk"
    read = next(e for e in of(events, ev.SimpleReply) if e.cookie == 2)
    assert read.frame == len(script) - len(INSIDE) + 13  # the frame whose bytes ended its record (1-based)


def test_records_cut_anywhere_decode_the_same(tmp_path: Path) -> None:
    forge = Forge(0x1303)
    script = STARTTLS + wrap(forge, INSIDE)
    keys = keylog(tmp_path, forge.keylog())
    whole = nbd(decode(script, keys))
    for pieces in (1, 7, 5000):
        assert nbd(decode(script, keys, pieces)) == whole


def test_key_update_is_followed_on_either_side(tmp_path: Path) -> None:
    forge = Forge(0x1302)
    script = STARTTLS + wrap(forge, INSIDE[:-1])
    script += [("c2s", forge.key_update("c2s")), ("s2c", forge.key_update("s2c")), ("s2c", forge.key_update("s2c"))]
    script += [("c2s", forge.data("c2s", w.request(0, 9, 0, 512))), ("s2c", forge.data("s2c", w.simple_reply(9, 0, bytes(512)))),
               ("c2s", forge.data("c2s", w.request(2, 10, 0, 0))), ("c2s", forge.alert("c2s"))]
    events = decode(script, keylog(tmp_path, forge.keylog()))
    assert [e.cookie for e in of(events, ev.SimpleReply)][-1] == 9
    assert status(events) == [("decrypted", "TLS 1.3, TLS_AES_256_GCM_SHA384")]
    assert of(events, ev.ConnectionEnd)[0].soft  # NBD_CMD_DISC was read under the updated key


def test_next_secret_is_hkdf_expand_label_traffic_upd() -> None:
    """RFC 8448 3: the server handshake traffic secret of the simple 1-RTT handshake and its key and IV."""
    suite = SUITES[0x1301]
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    keys = schedule.tls13_keys(suite, secret)
    assert (keys.key.hex(), keys.iv.hex()) == ("3fce516009c21727d0f2e4e86ee403bc", "5d313eb2671276ee13000b30")
    assert schedule.next_secret(suite, secret) == schedule.expand_label(suite, secret, "traffic upd", 32)


def test_tls12_prf_matches_the_published_vector() -> None:
    """The TLS 1.2 PRF (SHA-256) test vector posted to the IETF TLS list and used by many implementations."""
    out = schedule.prf(SUITES[0x009C], bytes.fromhex("9bbe436ba940f017b17652849a71db35"), b"test label",
                       bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100)
    assert out.hex().startswith("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e9")
    assert out.hex().endswith("a48082d122ee42c5a72e5a5110fff70187347b66")


def test_a_damaged_record_is_undecryptable_and_decoding_stops(tmp_path: Path) -> None:
    forge = Forge(0x1301)
    script = STARTTLS + wrap(forge, INSIDE)
    d, data = script[-3]
    script[-3] = (d, data[:40] + bytes([data[40] ^ 1]) + data[41:])  # one bit of the read's reply record
    events = decode(script, keylog(tmp_path, forge.keylog()))
    (first, _), (last, why) = status(events)
    assert (first, last) == ("decrypted", "undecryptable") and "failed authentication" in (why or "")
    assert not [e for e in of(events, ev.SimpleReply) if e.cookie == 2]
    after = [e for e in events if isinstance(e, ev.TlsData) and e.frame == len(script)]
    assert after and after[0].nbytes == len(script[-1][1])  # counted, not decoded, from there on


def test_lost_bytes_make_it_undecryptable(tmp_path: Path) -> None:
    forge = Forge(0x1301)
    script = STARTTLS + wrap(forge, INSIDE)
    conn = Connection(tls_keys=keylog(tmp_path, forge.keylog()))
    events: list[ev.Event] = []
    for frame, (d, data) in enumerate(script[:-4], 1):
        events += conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]
    events += conn.gap("s2c", 100, frame=99, time=0.0)
    events += conn.feed("s2c", script[-2][1], frame=100, time=0.0)
    assert status(events)[-1][0] == "undecryptable" and "lost 100 bytes" in (status(events)[-1][1] or "")
    assert of(events, ev.Gap)[0].resync is False


@pytest.mark.parametrize(("lines", "why"), [
    ("", "has no line for this session's client random"),
    ("CLIENT_HANDSHAKE_TRAFFIC_SECRET SERVER_HANDSHAKE_TRAFFIC_SECRET", "lacks SERVER_TRAFFIC_SECRET_0"),
    ("other", "does not open this session's records"),
])
def test_missing_or_wrong_keys_leave_no_key(tmp_path: Path, lines: str, why: str) -> None:
    forge = Forge(0x1301)
    if lines == "other":  # another session's secrets under this session's client random
        text = Forge(0x1301, client_random=forge.client_random).keylog()
    else:
        text = forge.keylog(tuple(lines.split())) if lines else Forge().keylog()
    events = decode(STARTTLS + wrap(forge, INSIDE), keylog(tmp_path, text))
    [(st, detail)] = status(events)
    assert st == "no-key" and why in (detail or "")
    assert not of(events, ev.Request) and sum(e.nbytes for e in of(events, ev.TlsData)) > 20000


def test_a_truncated_key_log_says_so(tmp_path: Path) -> None:
    forge = Forge(0x1301)
    text = forge.keylog()
    keys = keylog(tmp_path, text[:len(text) - 30])  # the last line cut inside its secret
    [(st, detail)] = status(decode(STARTTLS + wrap(forge, INSIDE), keys))
    assert st == "no-key" and "last line is cut short" in (detail or "") and "SERVER_TRAFFIC_SECRET_0" in (detail or "")


def test_a_record_longer_than_tls_allows_is_refused(tmp_path: Path) -> None:
    forge = Forge(0x1301)
    script = STARTTLS + forge.hellos() + [("c2s", record(23, b"") [:3] + (0xFFFF).to_bytes(2, "big") + bytes(100))]
    st, detail = status(decode(script, keylog(tmp_path, forge.keylog())))[-1]
    assert st == "undecryptable" and "65535 bytes, longer than TLS allows" in (detail or "")


def test_a_growing_key_log_releases_held_records(tmp_path: Path) -> None:
    forge = Forge(0x1301)
    path = tmp_path / "growing.log"
    keys = KeyLog(str(path), growing=True, clock=iter(range(10**6)).__next__)  # every look is a fresh one
    script = STARTTLS + wrap(forge, INSIDE)
    conn = Connection(tls_keys=keys)
    events: list[ev.Event] = []
    for frame, (d, data) in enumerate(script, 1):
        if frame == 18:  # the key log is written only now, well after the handshake and the GO
            path.write_text(forge.keylog())
        events += conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]
    assert nbd(events)[4:] == nbd(decode(STARTTLS[:2] + INSIDE, None))[2:]
    go = next(e for e in events if isinstance(e, ev.OptionRequest) and e.option == 7)
    assert go.frame == 15  # held, then decoded with the frame of the packet that carried it


@pytest.mark.parametrize("when", ["at-close", "hold-full"])
def test_a_key_written_within_one_recheck_is_still_read(tmp_path: Path, when: str) -> None:
    """The proxy's race (seen in CI): the client writes its key a moment after the watcher first looked, and
    the connection ends (or the hold fills) before RECHECK has passed. The clock stands still here, so only a
    look forced by the close or by the full hold can find the key."""
    forge = Forge(0x1301)
    path = tmp_path / "growing.log"
    path.write_text("")
    keys = KeyLog(str(path), growing=True, clock=lambda: 1000.0)  # no RECHECK ever passes
    many = [("c2s", w.request(0, 10 + i, 0, 512)) for i in range(200)] if when == "hold-full" else []
    script = STARTTLS + wrap(forge, INSIDE + many)
    conn = Connection(tls_keys=keys)
    events: list[ev.Event] = []
    for frame, (d, data) in enumerate(script, 1):
        if frame == 7:  # after the first look (at the ServerHello): the key log is written now
            path.write_text(forge.keylog())
        events += conn.feed(d, data, frame=frame, time=0.0)  # type: ignore[arg-type]
    events += conn.close("fin", frame=len(script) + 1, time=1.0)
    assert {st for st, _ in status(events)} == {"decrypted"}
    plain = nbd(decode(STARTTLS[:2] + INSIDE, None))[2:]
    assert nbd(events)[4:4 + len(plain)] == plain
    assert len(of(events, ev.Request)) == 3 + len(many)


def test_without_a_key_log_nothing_changes() -> None:
    forge = Forge(0x1301)
    events = decode(STARTTLS + wrap(forge, INSIDE), None)
    assert not status(events) and not of(events, ev.Request)


def test_data_ranges_are_the_ciphertext_bytes_that_carried_the_data(tmp_path: Path) -> None:
    """Redaction: two sessions alike but for their read and write data (same keys and nonces) differ exactly in
    the ciphertext of that data and in the records' tags; the ranges the decoder reports are the former."""
    forge = Forge(0x1302)
    twin = copy.deepcopy(forge)
    data = [("c2s", w.request(1, 1, 0, 4096, data=b"\xff" * 4096)), ("s2c", w.simple_reply(1)),
            ("c2s", w.request(0, 2, 0, 20000)), ("s2c", w.simple_reply(2, 0, b"\xee" * 20000))]
    zeros = [("c2s", w.request(1, 1, 0, 4096, data=bytes(4096))), ("s2c", w.simple_reply(1)),
             ("c2s", w.request(0, 2, 0, 20000)), ("s2c", w.simple_reply(2, 0, bytes(20000)))]
    one, other = STARTTLS + wrap(forge, INSIDE[:9] + data), STARTTLS + wrap(twin, INSIDE[:9] + zeros)
    conn = Connection(tls_keys=keylog(tmp_path, forge.keylog()), track_payload=True)
    ranges: dict[str, list[tuple[int, int]]] = {"c2s": [], "s2c": []}
    streams = {"c2s": b"", "s2c": b""}
    for frame, ((d, a), (_, b)) in enumerate(zip(one, other, strict=True)):
        conn.feed(d, a, frame=frame, time=0.0)  # type: ignore[arg-type]
        ranges[d] += conn.take_payload_ranges(d)  # type: ignore[arg-type]
        streams[d] += bytes(x ^ y for x, y in zip(a, b, strict=True))
    for d, want in (("c2s", 4096), ("s2c", 20000)):
        marked = {i for lo, hi in ranges[d] for i in range(lo, hi)}
        assert len(marked) == want
        differ = {i for i, x in enumerate(streams[d]) if x}
        assert marked <= differ and len(differ - marked) <= 16 * (1 + want // (1 << 14))  # the rest: the tags


def test_a_source_that_terminates_tls_hands_over_plaintext() -> None:
    """The hook for a proxy terminating TLS (StreamNote action "tls-plaintext"): after the acknowledgement the
    bytes are the plaintext itself, decoded like what a key log gives."""
    from nbdscope import vocab as it
    from nbdscope.analysis.engine import Engine

    script = STARTTLS + INSIDE
    items: list[it.StreamItem] = [it.StreamOpen(1, it.Endpoint("127.0.0.1", 40000), it.Endpoint("127.0.0.1", 10809),
                                                1, 0.0, True, "proxy"),
                                  it.StreamNote(1, "c2s", "TLS terminated by the proxy", 1, 0.0, action="tls-plaintext")]
    items += [it.StreamData(1, d, data, n, n / 1000) for n, (d, data) in enumerate(script, 2)]  # type: ignore[arg-type]
    items.append(it.StreamClose(1, "fin", 99, 1.0, "c2s"))
    engine = Engine()
    seen: list[ev.Event] = []
    for item in items:
        seen += engine.feed(item)
    result = engine.finish()
    assert nbd(seen)[4:] == nbd(decode(STARTTLS[:2] + INSIDE, None))[2:]
    assert result.sessions[0].tls_summary().startswith("TLS, decrypted (TLS terminated by the source")


def test_a_record_sent_twice_is_passed_over(tmp_path: Path) -> None:
    """nbdkit's GnuTLS was seen resending its last record, byte for byte, as the client closed: that copy opens
    under no sequence number that comes next, and is not damage."""
    forge = Forge(0x1302)
    script = STARTTLS + wrap(forge, INSIDE)
    script.append(script[-1])  # the record of NBD_CMD_DISC again
    events = decode(script, keylog(tmp_path, forge.keylog()))
    assert status(events) == [("decrypted", "TLS 1.3, TLS_AES_256_GCM_SHA384")]
    assert nbd(events)[4:] == nbd(decode(STARTTLS[:2] + INSIDE, None))[2:]
