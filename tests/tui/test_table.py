"""The message table as a user reads it at 80 columns: frame and error columns, times on the
input's first packet in each --time mode. Expected frames and times come from tshark (the
oracle every other view of nbdscope agrees with); expected errors from the capture's README
(nbdkit refuses the seed's NBD_CMD_CACHE with EINVAL; nbdsh's misbehaving client gets EINVAL
as a structured error chunk and as simple replies)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nbdscope.decoder import events as ev
from nbdscope.tui.app import NbdscopeApp
from nbdscope.tui.columns import DROP_ORDER, fit
from nbdscope.tui.filter import compile_filter
from nbdscope.tui.sources import file_producer
from nbdscope.tui.store import Store
from tests.tui.helpers import CAPTURES, loaded_store, screen_text, settle

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")


def tshark_times(capture: str) -> dict[int, tuple[float, float]]:
    """frame -> (seconds since the first packet, epoch seconds), as tshark reads the file."""
    out = subprocess.run(["tshark", "-r", str(CAPTURES / capture), "-T", "fields", "-e", "frame.number",
                          "-e", "frame.time_relative", "-e", "frame.time_epoch"],
                         capture_output=True, text=True, timeout=60, check=True)
    rows = (line.split("\t") for line in out.stdout.splitlines())
    return {int(n): (float(rel), float(epoch)) for n, rel, epoch in rows}


def table_rows(text: str) -> tuple[str, list[list[str]]]:
    """The table's header line and each row's words (the mark column, when set, dropped)."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if " frame " in f" {line} " and " type " in line)
    rows = []
    for line in lines[at + 1:]:
        if not line.strip() or line.startswith("─"):
            break
        words = line.split()
        rows.append(words[1:] if words[0] in ("!", "i") else words)
    return lines[at], rows


def shoot(capture: str, size: tuple[int, int], keys: list[str], time_mode: str = "rel") -> tuple[NbdscopeApp, str]:
    async def go() -> tuple[NbdscopeApp, str]:
        store = Store()
        app = NbdscopeApp(store, file_producer(store, [str(CAPTURES / capture)]), time_mode=time_mode)  # type: ignore[arg-type]
        async with app.run_test(size=size) as pilot:
            await settle(pilot, app)
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.1)
            await pilot.pause(0.3)
            return app, screen_text(app)

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_layout_keeps_frame_and_error_at_80_columns_and_drops_by_priority() -> None:
    natural = {"mark": 1, "frame": 6, "time": 10, "ses": 3, "dir": 1, "error": 9, "offset": 12, "length": 9,
               "latency": 8, "cookie": 16}
    wide = fit(natural, 200)
    assert [c.key for c, _ in wide][-1] == "cookie" and len(wide) == 11
    for width in (80, 79, 60, 40):
        cols = fit(natural, width)
        keys = [c.key for c, _ in cols]
        assert sum(w for _, w in cols) + len(cols) - 1 <= width, width  # one space between two columns
        gone = [k for k in DROP_ORDER if k not in keys]
        assert gone == list(DROP_ORDER[:len(gone)]), (width, gone)  # in priority order, nothing skipped
        assert {"frame", "time", "ses", "dir", "type"} <= set(keys), width
    assert {"frame", "error", "offset", "length"} <= {c.key for c, _ in fit(natural, 80)}


@needs_tshark
def test_frames_and_times_are_tsharks_at_80_columns() -> None:
    _, text = shoot("seed-cache-flag.pcap", (80, 50), ["m"])
    header, rows = table_rows(text)
    assert header.split()[:5] == ["frame", "time", "ses", "type", "error"]
    want = tshark_times("seed-cache-flag.pcap")
    assert len(rows) >= 15
    for words in rows:
        frame, shown = int(words[0]), float(words[1])
        assert shown == pytest.approx(want[frame][0], abs=1.5e-6), words  # not counted from the first message
    assert max(len(line) for line in text.splitlines()) <= 80


def test_error_column_names_simple_and_structured_errors() -> None:
    _, text = shoot("seed-cache-flag.pcap", (80, 24), ["m", "f", *"cmd=cache", "enter"])
    _, rows = table_rows(text)
    assert [w[3:6] for w in rows] == [["→", "CMD_CACHE", "0"], ["←", "SIMPLE_REPLY", "EINVAL"]]
    _, text = shoot("client-misbehaves-nbdsh.pcap", (80, 40), ["m", "f", *"errors", "enter"])
    _, rows = table_rows(text)
    chunk = [w for w in rows if w[4] == "CHUNK"]
    assert chunk and chunk[0][5] == "ERROR" and chunk[0][6] == "EINVAL"  # a structured NBD_REPLY_TYPE_ERROR
    assert all("EINVAL" in w for w in rows), rows
    _, text = shoot("client-misbehaves-nbdsh.pcap", (80, 40), ["m", "f", *"not errors and replies", "enter"])
    _, rows = table_rows(text)
    assert rows and not any(w[-1].startswith("E") or "EINVAL" in w for w in rows)  # successes: the column is empty


@needs_tshark
def test_abs_and_delta_modes_and_the_c_key() -> None:
    want = tshark_times("seed-cache-flag.pcap")
    for width, short in ((80, True), (160, False)):
        app, text = shoot("seed-cache-flag.pcap", (width, 40), ["m"], time_mode="abs")
        header, rows = table_rows(text)
        assert ("time of day" if short else "time (ISO 8601)") in header
        offset = app.store.utc_offset  # None: the capture names no zone, and the machine's own is used
        zone = timezone(timedelta(seconds=offset)) if offset is not None else None
        for words in rows:
            moment = datetime.fromtimestamp(want[int(words[0])][1], tz=UTC).astimezone(zone)
            assert words[1] == (moment.strftime("%H:%M:%S.%f") if short else moment.isoformat()), words
    app, text = shoot("seed-cache-flag.pcap", (80, 40), ["m", "c", "c"], time_mode="rel")  # rel → abs → delta
    assert app.time_mode == "delta"
    header, rows = table_rows(text)
    assert header.split()[1] == "delta"
    before = 0.0
    for words in rows:
        rel = want[int(words[0])][0]
        assert float(words[1]) == pytest.approx(rel - before, abs=2e-6), words  # since the row above
        before = rel
    assert "t=+" in text  # the detail pane's time is on the same base


def test_findings_and_the_summary_count_from_the_first_packet() -> None:
    app, text = shoot("seed-cache-flag-server.pcap", (120, 40), [])
    store = app.store
    first = store.findings[0].anomaly
    assert f"{first.time:.6f}" in text  # the findings table's time column: a finding's time is already relative
    request = next(e for e in store.events if isinstance(e, ev.Request) and e.frame == first.frame)
    assert first.time == pytest.approx(request.time - store.t0, abs=1e-6)
    app, text = shoot("seed-unaligned-extent.pcap", (80, 40), ["tab", "s"])
    s = app.store.sessions[0]
    assert f"started             {s.start_time - app.store.t0:.6f}" in text
    assert f"last message        {s.last_time - app.store.t0:.6f}" in text


@needs_tshark
def test_time_filter_counts_from_the_first_packet() -> None:
    store = loaded_store("seed-cache-flag.pcap")
    want = tshark_times("seed-cache-flag.pcap")
    first = store.events[0]
    assert want[first.frame][0] > 0.002  # the greeting comes after the TCP handshake
    pred = compile_filter(f"time<{want[first.frame][0] - 0.001:.6f}")
    assert pred is not None and not any(pred(store, r) for r in range(len(store)))
    pred = compile_filter(f"time<={want[first.frame][0] + 0.000001:.6f}")
    assert pred is not None and [r for r in range(len(store)) if pred(store, r)] == [0]
