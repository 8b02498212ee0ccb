"""The plugin on hand-built captures of what no shipped peer sends: extended
headers with 64-bit extents and two metadata contexts, every message split byte
by byte or packed several to a segment, and a misbehaving pair. Compared with
`nbdscope analyze` message by message, and the expert infos with its findings."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from tests import nbdwire as w
from tests import pcapbuild as pb
from tests.wireshark import NOT_ON_WIRE, TSHARK, analyze_key, analyze_records, plugin_key, plugin_messages

pytestmark = pytest.mark.skipif(TSHARK is None, reason="needs tshark (Debian package tshark)")

# spec numbers typed here (as tests/nbdwire.py does), not imported from the product
OPT_GO, OPT_SR, OPT_SET_META, OPT_EXT = 7, 8, 10, 11
REP_ACK, REP_INFO, REP_META = 1, 3, 4
READ, WRITE, DISC, FLUSH, BLOCK_STATUS = 0, 1, 2, 3, 7
RT_NONE, RT_DATA, RT_HOLE, RT_BS, RT_BS_EXT, RT_ERROR = 0, 1, 2, 5, 6, 0x8001
DONE = 1
TF = 0x1 | 0x4 | 0x8 | 0x40  # HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_WRITE_ZEROES


def handshake(ext: bool, structured: bool = True) -> tuple[list[bytes], list[bytes]]:
    c = [w.client_flags()]
    s = [w.greeting_newstyle()]
    if ext:
        c.append(w.option(OPT_EXT))
        s.append(w.opt_reply(OPT_EXT, REP_ACK))
    elif structured:
        c.append(w.option(OPT_SR))
        s.append(w.opt_reply(OPT_SR, REP_ACK))
    if structured:
        # the contexts are chosen for the export GO then selects (block-status.other-export otherwise)
        c.append(w.option(OPT_SET_META, w.opt_meta_data("disk", ["base:allocation", "qemu:dirty-bitmap:b0"])))
        s += [w.opt_reply(OPT_SET_META, REP_META, w.meta_context(1, "base:allocation")),
              w.opt_reply(OPT_SET_META, REP_META, w.meta_context(2, "qemu:dirty-bitmap:b0")),
              w.opt_reply(OPT_SET_META, REP_ACK)]
    c.append(w.option(OPT_GO, w.opt_go_data("disk", (3,))))
    s += [w.opt_reply(OPT_GO, REP_INFO, w.info_export(1 << 20, TF)),
          w.opt_reply(OPT_GO, REP_INFO, w.info_block_size(512, 4096, 1 << 25)),
          w.opt_reply(OPT_GO, REP_ACK)]
    return c, s


def write_capture(path: Path, exchanges: list[tuple[str, bytes]], how: str, port: int) -> None:
    """One connection; ``how``: "bytes" sends every message one byte per segment, "packed" joins
    consecutive messages of one direction into one segment, "plain" one message per segment."""
    f = pb.Flow(cport=port, sport=20099)
    packets = [*f.syn()]
    if how == "packed":
        merged: list[tuple[str, bytes]] = []
        for d, data in exchanges:
            if merged and merged[-1][0] == d:
                merged[-1] = (d, merged[-1][1] + data)
            else:
                merged.append((d, data))
        exchanges = merged
    for d, data in exchanges:
        pieces = [data[i:i + 1] for i in range(len(data))] if how == "bytes" else [data]
        for piece in pieces:
            packets.append(f.c2s(piece) if d == "c2s" else f.s2c(piece))
    packets += f.fin()
    pb.write_pcap(str(path), [(1700000000 + i * 0.001, pb.frame(1, p)) for i, p in enumerate(packets)])


def extended_session() -> list[tuple[str, bytes]]:
    c, s = handshake(ext=True)
    ex: list[tuple[str, bytes]] = [("s2c", s[0]), ("c2s", c[0]), ("c2s", c[1]), ("s2c", s[1]), ("c2s", c[2])]
    ex += [("s2c", m) for m in s[2:5]] + [("c2s", c[3])] + [("s2c", m) for m in s[5:]]
    data = bytes(range(256)) * 16
    ex += [("c2s", w.ext_request(READ, 1, 0, 4096)),
           ("s2c", w.ext_chunk(1, RT_DATA, 0, struct.pack(">Q", 0) + data[:2048])),
           ("s2c", w.ext_chunk(1, RT_HOLE, 0, struct.pack(">QI", 2048, 2048), flags=DONE)),
           # FUA and PAYLOAD_LEN: an extended write must say its payload length (extended-headers)
           ("c2s", w.ext_request(WRITE, 2, 8192, 512, flags=0x1 | 0x20, data=data[:512])),
           ("s2c", w.ext_chunk(2, RT_NONE, 8192, flags=DONE)),
           ("c2s", w.ext_request(BLOCK_STATUS, 3, 0, 65536)),
           ("s2c", w.ext_chunk(3, RT_BS_EXT, 0, w.extents_ext(1, [(4096, 0), (61440, 3)]))),
           ("s2c", w.ext_chunk(3, RT_BS_EXT, 0, w.extents_ext(2, [(65536, 1)]), flags=DONE)),
           ("c2s", w.ext_request(FLUSH, 4, 0, 0)),
           ("s2c", w.ext_chunk(4, RT_ERROR, 0, w.error_payload(5, "disk on fire"), flags=DONE)),
           ("c2s", w.ext_request(DISC, 5, 0, 0))]
    return ex


def misbehaving_session() -> list[tuple[str, bytes]]:
    c, s = handshake(ext=False, structured=False)
    ex: list[tuple[str, bytes]] = [("s2c", s[0]), ("c2s", c[0]), ("c2s", c[1])] + [("s2c", m) for m in s[1:]]
    ex += [("c2s", w.request(READ, 1, 0, 512, flags=0x200)),  # reserved command flag bit 9
           ("s2c", w.simple_reply(1, 0, bytes(512))),
           ("s2c", w.simple_reply(1, 0)),  # a second reply to cookie 1
           ("c2s", w.request(42, 2, 0, 0)),  # no such command
           ("s2c", w.simple_reply(2, 22)),
           ("s2c", w.simple_reply(99, 0)),  # nobody asked
           ("c2s", w.request(WRITE, 3, 100, 512, data=bytes(512))),  # unaligned to 512
           ("s2c", w.chunk(3, RT_NONE, flags=DONE)),  # structured replies never negotiated
           ("c2s", w.request(BLOCK_STATUS, 4, 0, 4096)),  # no context negotiated
           ("s2c", w.simple_reply(4, 95)),
           ("c2s", w.request(DISC, 5, 0, 0))]
    return ex


def haggling_session() -> list[tuple[str, bytes]]:
    """Option haggling gone wrong on both sides (option-protocol, all visible in one pass)."""
    OPT_INFO = 6
    return [("s2c", w.greeting_newstyle(0b01)),  # no NO_ZEROES offered ...
            ("c2s", w.client_flags(0b11)),  # ... yet the client asks for it
            ("c2s", w.option(OPT_SET_META, w.opt_meta_data("", ["base:allocation"]))),  # before structured replies
            ("s2c", w.opt_reply(OPT_SET_META, REP_META, w.meta_context(1, "base:allocation"))),
            ("s2c", w.opt_reply(OPT_SET_META, REP_ACK)),
            ("s2c", w.opt_reply(OPT_SR, REP_ACK)),  # nobody asked
            ("c2s", w.option(OPT_INFO, w.opt_go_data("disk", (3,)))),
            ("s2c", w.opt_reply(OPT_INFO, REP_INFO, w.info_export(0, TF))),
            ("s2c", w.opt_reply(OPT_INFO, REP_INFO, w.info_block_size(3, 100, 50))),  # sizes that cannot be
            ("s2c", w.opt_reply(OPT_INFO, REP_ACK)),
            ("c2s", w.option(OPT_GO, w.opt_go_data("disk", (3,)))),
            ("s2c", w.opt_reply(OPT_GO, REP_INFO, w.info_export(1 << 20, TF))),  # not what INFO said
            ("s2c", w.opt_reply(OPT_GO, REP_INFO, w.info_block_size(3, 100, 50))),
            ("s2c", w.opt_reply(OPT_GO, REP_ACK)),
            ("c2s", w.request(DISC, 1, 0, 0))]


SESSIONS = {"extended": extended_session, "misbehaving": misbehaving_session, "haggling": haggling_session}
MUST = {"extended": set(),
        # BLOCK_STATUS without structured replies is block-status.no-structured (no longer command-not-advertised)
        "misbehaving": {"reserved-bits-set", "unmatched-reply", "unknown-command", "unaligned-request",
                        "structured-reply-not-negotiated", "block-status"},
        "haggling": {"option-protocol", "block-size-invalid"}}


@pytest.fixture(scope="module", params=[(n, h) for n in SESSIONS for h in ("plain", "bytes", "packed")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def capture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name, how = request.param
    return _synthetic(tmp_path_factory, name, how)


@pytest.fixture(scope="module", params=("plain", "bytes", "packed"))
def extended_capture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the extended session has block status."""
    return _synthetic(tmp_path_factory, "extended", request.param)


def _synthetic(tmp_path_factory: pytest.TempPathFactory, name: str, how: str) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / f"{name}-{how}.pcap"
    write_capture(path, SESSIONS[name](), how, 40000 + len(how))
    return path


def test_plugin_agrees_with_analyze(capture: Path) -> None:
    ours = [(r["dir"], *analyze_key(r)) for r in analyze_records(capture) if r["type"] not in NOT_ON_WIRE]
    theirs = [(m["dir"], *plugin_key(m["fields"])) for m in plugin_messages(capture)]
    for d in ("c2s", "s2c"):
        a, b = [m for m in ours if m[0] == d], [m for m in theirs if m[0] == d]
        assert a == b, f"{capture.name} {d}"
    assert len(ours) >= 15


def test_plugin_experts_are_analyze_findings(capture: Path) -> None:
    found = Counter(rule for m in plugin_messages(capture) for rule in m["experts"])
    wanted = Counter(r["rule"] for r in analyze_records(capture) if r["type"] == "ANOMALY")
    must = MUST[capture.name.split("-")[0]]
    if not must:
        assert not found, found  # a clean session: no expert info at all
    assert must <= set(found), found
    assert must <= set(wanted), wanted
    assert not set(found) - set(wanted), f"plugin raised what analyze did not: {found} vs {wanted}"
    if capture.name.startswith("haggling"):  # every haggling finding, one for one
        # the NBD_INFO_BLOCK_SIZE relations are block-size-invalid's now (no longer option-protocol's)
        assert found["option-protocol"] == wanted["option-protocol"] >= 5, (found, wanted)
        assert found["block-size-invalid"] == wanted["block-size-invalid"] >= 6, (found, wanted)


def test_extended_extents_carry_their_context_meaning(extended_capture: Path) -> None:
    chunks = [m["fields"] for m in plugin_messages(extended_capture)
              if m["fields"]["nbdscope.msgtype"] == "NBD_REPLY_TYPE_BLOCK_STATUS_EXT"]
    assert [c["nbdscope.ctx.name"] for c in chunks] == ["base:allocation", "qemu:dirty-bitmap:b0"]
    assert chunks[0]["nbdscope.extent.state"] == ["data", "hole,zero"]
    assert chunks[1]["nbdscope.extent.state"] == "dirty"
