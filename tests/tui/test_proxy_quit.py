"""Quitting the terminal UI over a real proxy (a relay forked here, in front of a real nbdkit on
loopback): `q` with a client connected asks first, `n` stays, `y` quits at once despite a long
--grace; with nobody connected `q` just quits; and on exit the proxy's summary line is there, in
`proxy --tui` in a real terminal too."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nbdscope.proxy.addresses import parse_address
from nbdscope.proxy.run import RelayOptions
from nbdscope.proxy.source import ProxySource
from nbdscope.tui.app import NbdscopeApp
from nbdscope.tui.confirm import ConfirmQuit
from nbdscope.tui.sources import Producer
from nbdscope.tui.store import Store
from tests.live import free_port, process, run
from tests.tui.helpers import screen_text
from tests.tui.tmux import NBDSCOPE, Tmux

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdinfo")),
                                 reason="needs nbdkit and nbdinfo")]


@contextmanager
def proxied_app(grace: float = 60.0) -> Iterator[tuple[NbdscopeApp, Producer, int]]:
    up, front = free_port(), free_port()
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"], port=up):
        store = Store()
        source = ProxySource(parse_address(f"127.0.0.1:{front}"), parse_address(f"127.0.0.1:{up}"),
                             RelayOptions(grace=grace), log=store.add_notice)
        assert source.wait_ready() is None
        producer = Producer(store, source)
        try:
            yield NbdscopeApp(store, producer), producer, front
        finally:
            producer.stop(10, now=True)  # as the command does after the UI ends; bounded


def greeted(port: int) -> socket.socket:
    """A client that took the greeting and answered with its flags: a session left open in its options."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    got = b""
    while len(got) < 18:
        more = s.recv(18 - len(got))
        assert more, "the proxy closed before the greeting"
        got += more
    s.sendall((3).to_bytes(4, "big"))
    return s


async def until(pilot: object, test: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test():  # type: ignore[operator]
            return True
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    return False


def run_async(coro) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(asyncio.wait_for(coro, 90))


def test_q_with_a_client_connected_asks_and_y_closes_it_at_once() -> None:
    with proxied_app(grace=60) as (app, producer, front):
        client = greeted(front)

        async def go() -> None:
            async with app.run_test(size=(100, 30)) as pilot:
                assert await until(pilot, lambda: producer.open_sessions() == 1), "the session never showed"
                await pilot.press("q")
                await pilot.pause(0.2)
                assert isinstance(app.screen, ConfirmQuit), "q with a client connected must ask first"
                assert await until(pilot, lambda: "1 session open: quit and close it? y/n" in screen_text(app), 5), \
                    screen_text(app)
                await pilot.press("n")
                await pilot.pause(0.2)
                assert not isinstance(app.screen, ConfirmQuit) and app.is_running
                await pilot.press("q")
                await pilot.pause(0.2)
                assert isinstance(app.screen, ConfirmQuit)
                await pilot.press("y")
                started.append(time.monotonic())

        started: list[float] = []
        try:
            run_async(go())
            producer.stop(10)  # the UI is gone; the run ends as the relay does
            took = time.monotonic() - started[0]
        finally:
            client.close()
    assert took < 5, f"quitting closes the sessions at once, not after the 60 s grace period ({took:.1f} s)"
    assert producer.result is not None
    line = producer.summary()
    assert line is not None and line.startswith("nbdscope proxy: 1 session, "), line
    severities = Counter(f.anomaly.severity for f in app.store.findings)  # what the UI itself listed
    assert (f"findings: {severities['error']} errors, {severities['warning']} warnings, "
            f"{severities['info']} info") in line
    closing = [f.anomaly for f in app.store.findings if f.anomaly.check == "proxy-action.closed-at-shutdown"]
    assert len(closing) == 1 and closing[0].blame == "proxy"


def test_q_with_nobody_connected_quits_without_asking() -> None:
    with proxied_app() as (app, producer, front):
        run(["nbdinfo", f"nbd://127.0.0.1:{front}"])  # a client that came and went

        async def go() -> None:
            async with app.run_test(size=(100, 30)) as pilot:
                assert await until(pilot, lambda: len(app.store.sessions) == 1 and producer.open_sessions() == 0)
                await pilot.press("q")
                await pilot.pause(0.3)
                assert not isinstance(app.screen, ConfirmQuit)
                assert not app.is_running, "q with no client connected quits at once"

        run_async(go())
        producer.stop(10)
    line = producer.summary()
    assert line is not None and line.startswith("nbdscope proxy: 1 session, "), line


@pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux")
def test_proxy_tui_prints_the_summary_line_on_exit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    up, front = free_port(), free_port()
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"], port=up):
        command = (f"{NBDSCOPE} proxy --listen 127.0.0.1:{front} --upstream 127.0.0.1:{up} --tui; "
                   "echo EXITED $?; sleep 60")  # the shell keeps the pane, so what was printed can be read
        t = Tmux(["sh", "-c", command], 160, 30)
        try:
            t.wait_for("LIVE proxy", timeout=30)
            client = greeted(front)
            try:
                t.wait_for("1 session · ")
                t.keys("q")
                t.wait_for("quit and close it? y/n")
                t.keys("y")
                screen = t.wait_for("EXITED 0", timeout=15)
            finally:
                client.close()
        finally:
            t.close()
    assert "nbdscope proxy: 1 session, " in screen and "findings: " in screen, screen
