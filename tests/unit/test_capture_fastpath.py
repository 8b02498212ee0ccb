"""The flat per-packet loop of capture/streams.py must decide exactly as the general path
(frames + linklayer.tcp_segment + TcpStreams.feed, which is what read_captures ran before it
existed): generated conversations in every link type the fast path knows and some it does
not, IPv4 and IPv6, VLAN tags, IP and TCP options, fragments, truncated and padded frames,
retransmissions, holes, SYN/FIN/RST, NBD on an unknown port, and cut files."""

from __future__ import annotations

import socket
import struct
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from nbdscope import vocab as it
from nbdscope.capture import PacketStream, read_captures
from nbdscope.capture.linklayer import FAST_LAYOUTS, tcp_segment
from nbdscope.capture.pcapio.read import frames
from nbdscope.capture.tcp import Origin, fast_key
from tests import pcapbuild as pb

GREETING = b"NBDMAGIC" + b"IHAVEOPT" + b"\x00\x03"
SYN, ACK, FIN, RST, PSH = pb.SYN, pb.ACK, pb.FIN, pb.RST, pb.PSH


def ipv4(src: str, dst: str, tcp: bytes, options: bytes = b"", frag: int = 0x4000, total: int | None = None) -> bytes:
    ihl = 5 + len(options) // 4
    length = 4 * ihl + len(tcp) if total is None else total
    return struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, length, 7, frag, 64, 6, 0, socket.inet_aton(src),
                       socket.inet_aton(dst)) + options + tcp


def ipv6(src: str, dst: str, tcp: bytes, hop_by_hop: bool = False, fragment: bool = False) -> bytes:
    ext, nxt = b"", 6
    if fragment:
        ext, nxt = struct.pack(">BBHI", nxt, 0, 1, 99) + ext, 44  # offset 0, more fragments
    if hop_by_hop:
        ext, nxt = struct.pack(">BB6x", nxt, 0) + ext, 0
    return struct.pack(">IHBB16s16s", 0x60000000, len(ext) + len(tcp), nxt, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + ext + tcp


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes, options: bytes = b"",
        doff: int | None = None) -> bytes:
    off = 5 + len(options) // 4 if doff is None else doff
    return struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, 65535, 0,
                       0) + options + payload


# one segment: direction, payload, where its sequence number lies, flags and how it is framed
segment = st.fixed_dictionaries({
    "c2s": st.booleans(),
    "payload": st.binary(max_size=40),
    "shift": st.sampled_from([0, 0, 0, 0, 0, -3, -40, 5, 8, 300]),  # in order mostly; retransmitted; ahead
    "flags": st.sampled_from([ACK | PSH] * 8 + [ACK, FIN | ACK, RST, SYN, SYN | ACK, PSH]),
    "ip_options": st.sampled_from([b""] * 6 + [b"\x01" * 4, b"\x01" * 8, b"ports"]),  # see build()
    "tcp_options": st.sampled_from([b"", b"", b"\x01\x01\x08\x0a" + bytes(8), b"\x02\x04\x05\xb4"]),
    "frag": st.sampled_from([0x4000] * 8 + [0, 0x2000, 0x0001, 0x4000 | 0x2000]),
    "total": st.sampled_from([None] * 8 + [0, 20, 39]),  # as written; 0: as TSO captures say
    "doff": st.sampled_from([None] * 10 + [0, 4, 15]),
    "cut": st.sampled_from([None] * 8 + [10, 30, 50, 54, 60]),  # frame truncated by the snap length
    "pad": st.sampled_from([b""] * 6 + [bytes(6)]),  # Ethernet padding after the IP packet
    "v6ext": st.sampled_from([None] * 6 + ["hop", "frag"]),
})

conversation = st.fixed_dictionaries({
    "linktype": st.sampled_from([1, 1, 1, 113, 276, 0, 101]),
    "vlan": st.sampled_from([None, None, None, 42]),
    "v6": st.sampled_from([False, False, False, True]),
    "port": st.sampled_from([10809, 10809, 7000]),  # 7000: found by the greeting's magic
    "handshake": st.booleans(),
    "segments": st.lists(segment, max_size=25),
    "file_cut": st.sampled_from([None] * 6 + [1, 7, 20]),  # bytes cut off the end of the file
})


def build(conv: dict) -> list[bytes]:
    """The frames of a conversation: SYN handshake (or not), the greeting, then the segments."""
    client, server = ("fd00::1", "fd00::2") if conv["v6"] else ("10.0.0.1", "10.0.0.2")
    seqs = {True: 1000, False: 5000}
    packets: list[bytes] = []

    def packet(c2s: bool, flags: int, payload: bytes, seq: int, **how: object) -> None:
        src, dst = (client, server) if c2s else (server, client)
        sport, dport = (40000, conv["port"]) if c2s else (conv["port"], 40000)
        seg = tcp(sport, dport, seq, seqs[not c2s], flags, payload, how.get("tcp_options", b""),  # type: ignore[arg-type]
                  how.get("doff"))  # type: ignore[arg-type]
        if conv["v6"]:
            ip = ipv6(src, dst, seg, how.get("v6ext") == "hop", how.get("v6ext") == "frag")
        else:
            options = how.get("ip_options", b"")
            if options == b"ports":  # options that read like the TCP header, so only the IHL tells them apart
                options = seg[:12]
            ip = ipv4(src, dst, seg, options, how.get("frag", 0x4000), how.get("total"))  # type: ignore[arg-type]
        frame = pb.frame(conv["linktype"], ip, conv["vlan"] if conv["linktype"] == 1 else None)
        frame += how.get("pad", b"")  # type: ignore[operator]
        cut = how.get("cut")
        packets.append(frame[:cut] if cut is not None else frame)  # type: ignore[misc]

    if conv["handshake"]:
        packet(True, SYN, b"", seqs[True])
        packet(False, SYN | ACK, b"", seqs[False])
        seqs[True] += 1
        seqs[False] += 1
    packet(False, ACK | PSH, GREETING, seqs[False])
    seqs[False] += len(GREETING)
    for s in conv["segments"]:
        seq = seqs[s["c2s"]] + s["shift"]
        packet(s["c2s"], s["flags"], s["payload"], seq, **{k: s[k] for k in
               ("ip_options", "tcp_options", "frag", "total", "doff", "cut", "pad", "v6ext")})
        if s["shift"] == 0:
            seqs[s["c2s"]] += len(s["payload"])
    return packets


def general_path(path: str, trace: list[Origin]) -> list[it.StreamItem]:
    """read_captures as it was: every frame through tcp_segment and TcpStreams.feed."""
    stream = PacketStream(path, (), 0, trace)
    problems: list[str] = []
    out: list[it.StreamItem] = []
    for number, time, linktype, data in frames(path, problems):
        if number == 1:  # the first packet, whatever it holds, is where relative times count from
            out.append(it.TimeOrigin(path, time))
        out += [_owned(i) for i in stream.feed_packet(time, linktype, data, number)]
    out += [it.CaptureProblem(path, stream.last_frame, m) for m in problems]
    return out + [_owned(i) for i in stream.finish()]


def _owned(item: it.StreamItem) -> it.StreamItem:
    return item._replace(data=bytes(item.data)) if isinstance(item, it.StreamData) else item


def check(conv: dict, reuse: bool = False) -> None:
    packets = build(conv)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "c.pcap")
        pb.write_pcap(path, [(1000.0 + i / 64, p) for i, p in enumerate(packets)], linktype=conv["linktype"])
        if conv["file_cut"]:
            blob = Path(path).read_bytes()
            Path(path).write_bytes(blob[:max(24, len(blob) - conv["file_cut"])])
        want_trace: list[Origin] = []
        want = general_path(path, want_trace)
        got_trace: list[Origin] = []
        # with reuse_buffers a view is only good until the next item: take each one's bytes at once
        got = [_owned(i) for i in read_captures([path], reuse_buffers=reuse, trace=got_trace)]
    assert got == want
    assert got_trace == want_trace


@settings(max_examples=400, deadline=None)
@given(conversation, st.booleans())
def test_fast_path_gives_what_the_general_path_gives(conv: dict, reuse: bool) -> None:
    check(conv, reuse)


def data(c2s: bool, payload: bytes, **how: object) -> dict:
    seg = {"c2s": c2s, "payload": payload, "shift": 0, "flags": ACK | PSH, "ip_options": b"", "tcp_options": b"",
           "frag": 0x4000, "total": None, "doff": None, "cut": None, "pad": b"", "v6ext": None}
    return seg | how


def conversation_of(*segments: dict, linktype: int = 1, handshake: bool = True) -> dict:
    return {"linktype": linktype, "vlan": None, "v6": False, "port": 10809, "handshake": handshake,
            "segments": list(segments), "file_cut": None}


def test_segment_that_fills_a_hole_drains_what_waits() -> None:
    check(conversation_of(data(True, b"later", shift=4), data(True, b"firstXXXX"), data(True, b"next")))


def test_options_that_read_like_the_tcp_header() -> None:
    check(conversation_of(data(True, b"abcd"), data(True, bytes(range(64)), ip_options=b"ports"), data(True, b"ijkl")))


def test_fragments_are_left_to_the_general_path() -> None:
    check(conversation_of(data(True, b"abcd"), data(True, b"more", frag=0x2000), data(True, b"rest", frag=0x0003),
                          data(True, b"more")))


def test_short_data_offset_in_a_cooked_frame() -> None:
    check(conversation_of(data(True, b"abcd"), data(True, b"xyz", total=39, doff=4), linktype=113))


def test_syn_of_the_server_mid_connection_turns_the_directions() -> None:
    check(conversation_of(data(False, b"", flags=SYN), data(True, b"abcd"), data(True, b"efgh"), handshake=False))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([1, 113, 276]), st.sampled_from([None, None, 7]), segment, st.booleans())
def test_fast_layout_reads_what_tcp_segment_reads(linktype: int, vlan: int | None, seg: dict, v6: bool) -> None:
    """Where the loop's guard passes and there is payload, FAST_LAYOUTS reads the general parser's
    segment; where the guard fails, it is for something the general parser has to look into."""
    conv = {"linktype": linktype, "vlan": vlan if linktype == 1 else None, "v6": v6, "port": 10809,
            "handshake": False, "segments": [seg], "file_cut": None}
    frame = build(conv)[-1]
    layout = FAST_LAYOUTS[linktype]
    general = tcp_segment(linktype, frame)
    if len(frame) < layout.ip + 40:
        return  # the loop does not look at such a frame
    etype, vihl, total, fragproto, key, seq, dflags = layout.unpack_from(frame, 0)
    if not (etype == 0x0800 and vihl == 0x45 and fragproto & 0x3FFF00FF == 6 and dflags >= 0x5000):
        # only for a reason the general path has to look into
        assert (vlan is not None or v6 or seg["ip_options"] or seg["frag"] & 0x3FFF
                or (seg["doff"] is not None and seg["doff"] < 5))
        return
    pstart = layout.ip + 20 + ((dflags >> 10) & 0x3C)
    pend = layout.ip + total if total and layout.ip + total < len(frame) else len(frame)
    if pstart >= pend:
        return  # no payload: the loop leaves such a segment to the general path
    assert general is not None
    assert key == fast_key(general.src, general.sport, general.dst, general.dport)
    assert (seq, dflags & 0xFF) == (general.seq, general.flags)
    assert (bytes(frame[pstart:pend]), pstart) == (bytes(general.payload), general.offset)
