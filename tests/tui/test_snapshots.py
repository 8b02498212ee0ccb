"""Text snapshots of the key screens, compared with files committed after review by
eye; each test also asserts the facts the screen must show, checked against the
spec tables and the capture's documented behaviour rather than copied from output.

Set NBDSCOPE_UPDATE_SNAPSHOTS=1 to rewrite the files (then review the diff)."""

from __future__ import annotations

import asyncio
import os

import pytest

from nbdscope.spec import TRANSMISSION_FLAGS, Errno
from nbdscope.tui.app import NbdscopeApp
from nbdscope.tui.sources import file_producer
from nbdscope.tui.store import Store
from tests.tui.helpers import CAPTURES, SNAPSHOTS, screen_text, settle


def compare(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("NBDSCOPE_UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(text + "\n")
        if not os.environ.get("NBDSCOPE_UPDATE_SNAPSHOTS"):
            pytest.fail(f"{path} written: review it by eye, then commit it")
    assert text + "\n" == path.read_text(), f"screen differs from {path} (NBDSCOPE_UPDATE_SNAPSHOTS=1 rewrites)"


def shoot(capture: str, size: tuple[int, int], keys: list[str], typed: str = "") -> str:
    """The screen after ``keys`` (each given time to act), then ``typed`` at typing speed."""

    async def go() -> str:
        os.chdir(CAPTURES.parent)  # relative path: the status line shows it as a user would type it
        store = Store()
        app = NbdscopeApp(store, file_producer(store, [f"captures/{capture}"]))
        async with app.run_test(size=size) as pilot:
            await settle(pilot, app)
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.2)
            await pilot.press(*typed)  # no pause: the live filter waits for typing to stop
            await pilot.pause(0.3)
            return screen_text(app)

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_overview_of_the_qemu30_server_seed() -> None:
    text = shoot("seed-cache-flag-server.pcap", (80, 24), [])
    compare("overview-seed-cache-flag-server-80x24", text)
    assert "2 sessions · 30 messages · 2 anomalies" in text  # the client's CACHE, the server's bit 8 hazard
    assert text.count("cache-flag-mismatch") >= 3  # two rows and the detail of the highlighted one
    # the highlighted (first) finding names the right bit numbers of the spec
    assert f"NBD_FLAG_SEND_CACHE (bit {TRANSMISSION_FLAGS.by_name('SEND_CACHE').number})" in text  # type: ignore[union-attr]
    assert "0x10d" in text  # the scripted qemu 3.0 server's flags (captures/README.md: --tflags 0x10d)


def test_cache_request_detail_shows_the_wrong_bit() -> None:
    text = shoot("seed-cache-flag-server.pcap", (120, 80), ["enter"])
    compare("messages-seed-cache-flag-server-120x80", text)
    assert "NBD_CMD_CACHE   client → server   session s1   frame 17" in text
    lines = text.splitlines()
    multi = TRANSMISSION_FLAGS.by_name("CAN_MULTI_CONN")
    cache = TRANSMISSION_FLAGS.by_name("SEND_CACHE")
    assert multi is not None and cache is not None and (multi.number, cache.number) == (8, 10)
    bit8 = next(line for line in lines if f" {multi.number}  {multi.name}" in line)
    bit10 = next(line for line in lines if f"{cache.number}  {cache.name}" in line)
    assert "◀" in bit8 and " set " in bit8  # bit 8 is set by this server and named by the finding
    assert "◀" in bit10 and " clear " in bit10  # bit 10 is where the spec puts SEND_CACHE: clear
    assert "header bytes" in text and "25 60 95 13" in text  # the request magic 0x25609513 on the wire


def test_seed_cache_refusal_in_the_table() -> None:
    text = shoot("seed-cache-flag.pcap", (80, 24), ["m", "f", *"cmd=cache", "enter"])
    compare("filter-seed-cache-flag-80x24", text)
    assert "2 of 26 messages · filter: cmd=cache" in text
    assert f"{Errno.EINVAL}" in text or "EINVAL" in text or "SIMPLE_REPLY" in text


def test_summary_of_the_unaligned_extent_seed() -> None:
    text = shoot("seed-unaligned-extent.pcap", (80, 30), ["tab", "s"])
    compare("summary-seed-unaligned-extent-80x30", text)
    assert "size                1,024 bytes" in text  # the 1024-byte export of captures/README.md
    assert "min 512  preferred 4096  max payload 33554432" in text
    assert "NBD_CMD_BLOCK_STATUS" in text and "NBD_CMD_READ" in text


def test_invalid_filter_while_typed_at_80x24() -> None:
    text = shoot("client-misbehaves-nbdsh.pcap", (80, 24), ["m", "f"], typed="errors and bogus<3")
    compare("filter-error-client-misbehaves-80x24", text)
    lines = text.splitlines()
    assert lines[0].split() == ["filter", "errors", "and", "bogus<3"]  # the typed text, in the focused bar
    assert lines[1].index("^") == lines[0].index("bogus") and "column 12: unknown field 'bogus'" in lines[1]
    assert " of 36 messages" not in text and "filter not applied" in text
    assert "the table shows all 36 messages" in text  # the view is the last filter applied: none
