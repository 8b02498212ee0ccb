"""Capture layer tests on captures built byte by byte: link layers, IP versions,
TCP reassembly corner cases, NBD detection, file formats and damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from nbdscope import vocab as it
from nbdscope.capture import CaptureError, read_captures
from tests import pcapbuild as pb

GREETING = b"NBDMAGIC" + b"IHAVEOPT" + b"\x00\x03"
REQ = bytes.fromhex("25609513") + bytes(24)


def stream_bytes(items: list[it.StreamItem], direction: str) -> bytes:
    return b"".join(i.data for i in items if isinstance(i, it.StreamData) and i.dir == direction)


def run(tmp_path: Path, packets: list[bytes], linktype: int = 1, ports: tuple[int, ...] = (),
        wrap: bool = True) -> list[it.StreamItem]:
    path = tmp_path / "t.pcap"
    frames = [pb.frame(linktype, p) for p in packets] if wrap else packets
    pb.write_pcap(str(path), [(1000.0 + i / 100, f) for i, f in enumerate(frames)], linktype=linktype)
    return [i for i in read_captures([str(path)], extra_ports=ports) if not isinstance(i, it.TimeOrigin)]


def basic(flow: pb.Flow) -> list[bytes]:
    return [*flow.syn(), flow.s2c(GREETING), flow.c2s(b"\x00\x00\x00\x03"), flow.c2s(REQ), *flow.fin()]


@pytest.mark.parametrize("linktype", [1, 113, 276, 0, 101])
@pytest.mark.parametrize(("client", "server"), [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_link_layers_and_ip_versions(tmp_path: Path, linktype: int, client: str, server: str) -> None:
    items = run(tmp_path, basic(pb.Flow(client, server)), linktype)
    opened = [i for i in items if isinstance(i, it.StreamOpen)]
    assert len(opened) == 1
    assert (opened[0].client.host, opened[0].client.port) == (client, 40000)
    assert (opened[0].server.host, opened[0].server.port) == (server, 10809)
    assert opened[0].saw_start and opened[0].frame == 1
    assert stream_bytes(items, "s2c") == GREETING
    assert stream_bytes(items, "c2s") == b"\x00\x00\x00\x03" + REQ
    assert isinstance(items[-1], it.StreamClose) and items[-1].how == "fin"


def test_vlan_tagged_ethernet(tmp_path: Path) -> None:
    packets = [pb.frame(1, p, vlan=42) for p in basic(pb.Flow())]
    items = run(tmp_path, packets, wrap=False)
    assert stream_bytes(items, "s2c") == GREETING


def test_out_of_order_retransmission_and_overlap(tmp_path: Path) -> None:
    f = pb.Flow()
    pkts = f.syn()
    base = f.sseq
    data = bytes(range(256)) * 4
    pkts += [f.s2c(data[300:600], seq=base + 300, advance=False),  # arrives early
             f.s2c(data[0:300], seq=base, advance=False),  # fills the hole
             f.s2c(data[0:300], seq=base, advance=False),  # retransmission
             f.s2c(data[500:1024], seq=base + 500, advance=False)]  # overlaps 100 delivered bytes
    f.sseq = base + 1024
    pkts += f.fin()
    items = run(tmp_path, pkts)
    assert stream_bytes(items, "s2c") == data
    assert not any(isinstance(i, it.StreamGap) for i in items)


def test_missing_segment_becomes_gap_when_acked(tmp_path: Path) -> None:
    f = pb.Flow()
    pkts = f.syn()
    base = f.sseq
    pkts += [f.s2c(b"A" * 100, seq=base, advance=False), f.s2c(b"C" * 100, seq=base + 200, advance=False),
             f.ack_from_client(base + 300), f.s2c(b"D" * 10, seq=base + 300, advance=False)]
    items = run(tmp_path, pkts, ports=())
    gaps = [i for i in items if isinstance(i, it.StreamGap)]
    assert [(g.dir, g.nbytes, g.frame) for g in gaps] == [("s2c", 100, 6)]
    assert stream_bytes(items, "s2c") == b"A" * 100 + b"C" * 100 + b"D" * 10


def test_hole_open_at_end_of_capture(tmp_path: Path) -> None:
    f = pb.Flow()
    pkts = f.syn()
    base = f.sseq
    pkts += [f.s2c(b"A" * 10, seq=base, advance=False), f.s2c(b"B" * 10, seq=base + 50, advance=False)]
    items = run(tmp_path, pkts)
    assert [i.nbytes for i in items if isinstance(i, it.StreamGap)] == [40]
    assert stream_bytes(items, "s2c") == b"A" * 10 + b"B" * 10
    assert isinstance(items[-1], it.StreamClose) and items[-1].how == "end-of-capture"


def test_sequence_wraparound(tmp_path: Path) -> None:
    f = pb.Flow(sseq=0xFFFFFFF0)
    pkts = [*f.syn(), f.s2c(b"x" * 40), f.s2c(b"y" * 40)]
    items = run(tmp_path, pkts)
    assert stream_bytes(items, "s2c") == b"x" * 40 + b"y" * 40


def test_mid_stream_on_unknown_port_found_by_magic(tmp_path: Path) -> None:
    f = pb.Flow(sport=7777, cport=50000)
    pkts = [f.c2s(REQ), f.s2c(bytes.fromhex("67446698") + bytes(12))]
    items = run(tmp_path, pkts)
    opened = [i for i in items if isinstance(i, it.StreamOpen)]
    assert len(opened) == 1 and opened[0].server.port == 7777 and not opened[0].saw_start
    assert stream_bytes(items, "c2s") == REQ


def test_server_detected_without_syn_from_greeting(tmp_path: Path) -> None:
    f = pb.Flow(sport=30000, cport=60000)  # the client has the higher port, server speaks first
    items = run(tmp_path, [f.s2c(GREETING), f.c2s(b"\x00\x00\x00\x03")])
    opened = next(i for i in items if isinstance(i, it.StreamOpen))
    assert opened.server.port == 30000 and opened.saw_start


def test_non_nbd_traffic_is_ignored_and_extra_port_is_honoured(tmp_path: Path) -> None:
    f = pb.Flow(sport=8080)
    pkts = [*f.syn(), f.s2c(b"HTTP/1.1 200 OK\r\n"), f.c2s(b"GET / HTTP/1.1\r\n")]
    assert run(tmp_path, pkts) == []
    f = pb.Flow(sport=8080)
    items = run(tmp_path, [*f.syn(), f.s2c(b"not nbd at all")], ports=(8080,))
    assert stream_bytes(items, "s2c") == b"not nbd at all"


def test_gzip_and_pcapng_with_two_link_types(tmp_path: Path) -> None:
    f = pb.Flow()
    pkts = basic(f)
    path = tmp_path / "t.pcapng"
    pb.write_pcapng(str(path), [(1.0 + i, i % 2, pb.frame(113 if i % 2 else 1, p)) for i, p in enumerate(pkts)],
                    [1, 113])
    items = list(read_captures([str(path)]))
    assert stream_bytes(items, "s2c") == GREETING and stream_bytes(items, "c2s").endswith(REQ)
    gz = tmp_path / "t.pcapng.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    unzipped = list(read_captures([str(gz)]))
    assert stream_bytes(unzipped, "s2c") == GREETING and len(unzipped) == len(items)


def test_two_files_have_distinct_connection_ids(tmp_path: Path) -> None:
    paths = []
    for n in range(2):
        p = tmp_path / f"{n}.pcap"
        pb.write_pcap(str(p), [(1.0 + i, pb.frame(1, x)) for i, x in enumerate(basic(pb.Flow()))])
        paths.append(str(p))
    opened = [i for i in read_captures(paths) if isinstance(i, it.StreamOpen)]
    assert [(o.conn, o.source) for o in opened] == [(0, paths[0]), (1, paths[1])]


def test_truncated_file_keeps_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    pb.write_pcap(str(path), [(1.0 + i, pb.frame(1, p)) for i, p in enumerate(basic(pb.Flow()))])
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    items = list(read_captures([str(path)]))
    problems = [i for i in items if isinstance(i, it.CaptureProblem)]
    assert len(problems) == 1 and "truncated" in problems[0].message
    assert stream_bytes(items, "s2c") == GREETING


def test_garbage_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"this is not a capture at all")
    with pytest.raises(CaptureError, match=r"junk\.pcap: not a pcap"):
        list(read_captures([str(path)]))


def test_close_records_who_closed_first(tmp_path: Path) -> None:
    items = run(tmp_path, basic(pb.Flow()))  # the client's FIN comes first
    close = items[-1]
    assert isinstance(close, it.StreamClose) and close.how == "fin" and close.by == "c2s"
    f = pb.Flow()
    rst = pb.ip_packet(f.s, f.c, f.sp, f.cp, f.sseq + 14, pb.RST | pb.ACK)
    items = run(tmp_path, [*f.syn(), f.s2c(GREETING), rst])
    assert isinstance(items[-1], it.StreamClose) and (items[-1].how, items[-1].by) == ("rst", "s2c")
