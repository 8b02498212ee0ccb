"""The detail and hex panes, on a session built byte by byte with the independent
test encoder (numbers typed from the spec, not taken from nbdscope.spec)."""

from __future__ import annotations

import asyncio
import re

import pytest
from rich.console import Console

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine
from nbdscope.decoder import events as ev
from nbdscope.tui import fields as F
from nbdscope.tui.detail import Palette, finding_renderable, hex_renderable, message_renderable
from nbdscope.tui.store import Store
from tests import nbdwire as W
from tests.tui.helpers import CAPTURES, file_app, loaded_store, screen_text, settle

PAL = Palette(error="red", warning="yellow", accent="blue", muted="dim")
OPT_GO, REP_ACK, REP_INFO, CMD_READ, CMD_WRITE = 7, 1, 3, 0, 1
FUA, BIT9 = 1 << 0, 1 << 9  # command flag bit 0 is NBD_CMD_FLAG_FUA; bit 9 is not defined by the spec


def session() -> Store:
    store = Store()
    engine = Engine([store])
    frame = iter(range(1, 100))

    def send(direction: str, data: bytes) -> None:
        engine.feed(it.StreamData(1, direction, data, next(frame), 1.0 + len(store) / 1000))  # type: ignore[arg-type]

    engine.feed(it.StreamOpen(conn=1, client=it.Endpoint("127.0.0.1", 5000), server=it.Endpoint("127.0.0.1", 10809),
                              frame=0, time=1.0, saw_start=True, source="built"))
    send("s2c", W.greeting_newstyle())
    send("c2s", W.client_flags() + W.option(OPT_GO, W.opt_go_data()))
    # flags 0b1101: HAS_FLAGS, SEND_FLUSH, SEND_FUA
    send("s2c", W.opt_reply(OPT_GO, REP_INFO, W.info_export(1 << 20, 0b1101)) + W.opt_reply(OPT_GO, REP_ACK))
    send("c2s", W.request(CMD_WRITE, 7, 4096, 512, FUA | BIT9, bytes(512)))
    send("s2c", W.simple_reply(7))
    send("c2s", W.request(CMD_READ, 8, 0, 512))
    send("s2c", W.simple_reply(8, 0, bytes(512)))
    engine.finish()
    return store


def text(renderable: object, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_reserved_command_flag_stands_out_and_fua_is_named() -> None:
    store = session()
    row = next(r for r in range(len(store)) if isinstance(store.events[r], ev.Request)
               and store.events[r].cookie == 7)  # type: ignore[attr-defined]
    out = text(message_renderable(store, row, PAL))
    lines = out.splitlines()
    assert any(line.split()[:4] == ["9", "RESERVED", "SET", "not"] for line in lines)  # bit 9, set, undefined
    fua = next(line for line in lines if "NBD_CMD_FLAG_FUA" in line and "force unit access" in line)
    assert fua.split()[:3] == ["0", "NBD_CMD_FLAG_FUA", "set"]
    no_hole = next(line for line in lines if "NBD_CMD_FLAG_NO_HOLE" in line)
    assert no_hole.split()[:3] == ["1", "NBD_CMD_FLAG_NO_HOLE", "clear"]
    assert "reserved-bits-set" in out  # the rule's finding is shown on the message itself
    assert "→ reply: NBD_SIMPLE_REPLY" in out


def test_hex_pane_is_the_request_header_as_sent() -> None:
    store = session()
    row = next(r for r in range(len(store)) if isinstance(store.events[r], ev.Request)
               and store.events[r].cookie == 8)  # type: ignore[attr-defined]
    out = text(hex_renderable(store, row, PAL))
    sent = W.request(CMD_READ, 8, 0, 512)
    dumped = bytes.fromhex("".join(line[6:30] for line in out.splitlines()[1:] if line.strip()))
    assert dumped == sent and out.startswith(f"{len(sent)} header bytes")


def test_reply_links_back_to_its_request() -> None:
    store = session()
    reply = next(r for r in range(len(store)) if isinstance(store.events[r], ev.SimpleReply)
                 and store.events[r].cookie == 8)  # type: ignore[attr-defined]
    out = text(message_renderable(store, reply, PAL))
    assert "→ request: NBD_CMD_READ" in out and "latency_us" in out
    assert store.link[store.link[reply]] == reply


REPR = re.compile(r"\b(True|False|None)\b|\['|\{'|\('|\[\]|\(\)")
SHIPPED = sorted(p.name for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("capture", SHIPPED)
def test_no_python_repr_in_any_pane(capture: str) -> None:
    """Every message of every shipped capture, and every finding, as the detail pane shows them."""
    store = loaded_store(capture)
    assert len(store) > 0
    for row in range(len(store)):
        out = text(message_renderable(store, row, PAL), width=200)
        hit = REPR.search(out)
        assert hit is None, (row, type(store.events[row]).__name__, hit.group(), out)
    for finding in store.findings:
        out = text(finding_renderable(finding.anomaly, PAL, "0.1"), width=200)
        assert REPR.search(out) is None, out


def test_values_read_as_words_units_and_names() -> None:
    store = session()
    start = next(r for r in range(len(store)) if isinstance(store.events[r], ev.TransmissionStart))
    lines = text(message_renderable(store, start, PAL)).splitlines()
    assert any(line.split()[:2] == ["size", "1048576"] and "(1 MiB)" in line for line in lines)
    flags = next(line for line in lines if line.startswith("transmission_flags"))
    assert "0x000d:" in flags and flags.split(":", 1)[1].split(", ") == [" FLAG_HAS_FLAGS", "FLAG_SEND_FLUSH",
                                                                         "FLAG_SEND_FUA"]
    assert any(line.split()[:2] == ["structured_replies", "no"] for line in lines)  # a bool, as a word
    write = next(r for r in range(len(store)) if isinstance(store.events[r], ev.Request)
                 and store.events[r].cookie == 7)  # type: ignore[attr-defined]
    lines = text(message_renderable(store, write, PAL)).splitlines()
    assert any(line.split()[:3] == ["offset", "4096", "bytes"] and "(4 KiB)" in line for line in lines)
    assert any(line.split()[:3] == ["length", "512", "bytes"] for line in lines)


def closing(by: str | None) -> Store:
    """A session that ends with a TCP close by one side (or by an unseen one)."""
    store = Store()
    engine = Engine([store])
    engine.feed(it.StreamOpen(conn=1, client=it.Endpoint("127.0.0.1", 5000), server=it.Endpoint("127.0.0.1", 10809),
                              frame=1, time=1.0, saw_start=True, source="built"))
    engine.feed(it.StreamData(1, "s2c", W.greeting_newstyle(), 2, 1.001))
    engine.feed(it.StreamClose(1, "fin", 3, 1.002, by=by))  # type: ignore[arg-type]
    engine.finish()
    return store


@pytest.mark.parametrize("by,arrow,words", [("c2s", "→", "client → server"), ("s2c", "←", "server → client")])
def test_connection_end_names_the_closing_side_as_the_direction_column_does(by: str, arrow: str,
                                                                              words: str) -> None:
    store = closing(by)
    row = next(r for r in range(len(store)) if isinstance(store.events[r], ev.ConnectionEnd))
    lines = text(message_renderable(store, row, PAL)).splitlines()
    assert lines[0].split("   ")[:2] == ["CONNECTION_END", words]
    by_line = next(line for line in lines if line.startswith("by "))
    assert by_line.split(None, 1)[1].startswith(words)  # the same words, not "c2s"
    assert F.shown_direction(store.events[row]) == by and {"c2s": "→", "s2c": "←"}[by] == arrow


def test_connection_end_with_an_unseen_closer_claims_no_side() -> None:
    store = closing(None)
    row = next(r for r in range(len(store)) if isinstance(store.events[r], ev.ConnectionEnd))
    title = text(message_renderable(store, row, PAL)).splitlines()[0]
    assert "closing side not seen" in title and "→" not in title and "←" not in title


def test_table_arrow_of_connection_end_is_the_closing_side() -> None:
    async def go() -> list[str]:
        app = file_app("client-misbehaves-nbdsh.pcap")  # one session closed by the server, one by the client
        async with app.run_test(size=(100, 60)) as pilot:
            await settle(pilot, app)
            await pilot.press("m", "f", *"type=CONNECTION_END", "enter")
            await pilot.pause(0.6)
            return [line for line in screen_text(app).splitlines() if ("CONNECTION_END" in line and "→" in line)
                    or ("CONNECTION_END" in line and "←" in line)]

    rows = asyncio.run(asyncio.wait_for(go(), 60))
    assert [r.split()[3] for r in rows[:2]] == ["←", "→"]  # frame 58: the server closed; frame 62: the client
