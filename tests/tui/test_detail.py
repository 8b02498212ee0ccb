"""The detail and hex panes, on a session built byte by byte with the independent
test encoder (numbers typed from the spec, not taken from nbdscope.spec)."""

from __future__ import annotations

from rich.console import Console

from nbdscope import vocab as it
from nbdscope.analysis.engine import Engine
from nbdscope.decoder import events as ev
from nbdscope.tui.detail import Palette, hex_renderable, message_renderable
from nbdscope.tui.store import Store
from tests import nbdwire as W

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
