"""The proxy's console in front of a real nbdkit: sessions named as the engine names them, each flag
rewrite said once, and Ctrl-C (real SIGINTs to the proxy process) with sessions open: a line at once,
a second Ctrl-C closing them now, recorded as the proxy's doing."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nbdscope.capture.processes import stop_process
from tests.live import free_port, process, run

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "nbdinfo")),
                                 reason="needs nbdkit and nbdinfo")]


class Console:
    """A proxy subprocess whose stderr is read line by line, every wait bounded."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self._rest = proc, b""
        self.lines: list[str] = []

    def wait_line(self, text: str, timeout: float) -> str | None:
        """The first stderr line (read so far or within ``timeout``) containing ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if text in line:
                    return line
            left = deadline - time.monotonic()
            assert self.proc.stderr is not None
            if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                return None
            *done, self._rest = (self._rest + chunk).split(b"\n")
            self.lines += [x.decode(errors="replace") for x in done]

    def finish(self, timeout: float) -> float | None:
        """Seconds until the process exited (None if it did not within ``timeout``), with all of stderr read."""
        start = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        took = time.monotonic() - start
        assert self.proc.stderr is not None
        rest = self._rest + self.proc.stderr.read()
        self.lines += [x.decode(errors="replace") for x in rest.split(b"\n") if x]
        self._rest = b""
        return took


@contextmanager
def console(tmp: Path, upstream: int, *args: str) -> Iterator[tuple[Console, int]]:
    front = free_port()
    cmd = [sys.executable, "-m", "nbdscope", "proxy", "--listen", f"127.0.0.1:{front}", "--upstream",
           f"127.0.0.1:{upstream}", "--jsonl", str(tmp / "live.jsonl"), *args]
    # its own process group, so that ctrl_c can signal the group as a terminal's Ctrl-C does
    proc = subprocess.Popen(cmd, stdout=open(tmp / "console.out", "wb"), stderr=subprocess.PIPE,
                            start_new_session=True)
    con = Console(proc)
    try:
        assert con.wait_line("listening on", 60), con.lines
        yield con, front
    finally:
        stop_process(proc, signal.SIGKILL, 10)  # type: ignore[arg-type]


def ctrl_c(con: Console) -> None:
    """SIGINT to the proxy's whole process group (the watcher and the relay it forked), like a terminal."""
    os.killpg(con.proc.pid, signal.SIGINT)


def records(tmp: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp / "live.jsonl").read_text().splitlines()]


def greeted(port: int) -> socket.socket:
    """A client that took the server's greeting and answered it: a session in its option haggling, left open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    got = b""
    while len(got) < 18:  # NBDMAGIC, IHAVEOPT, handshake flags
        more = s.recv(18 - len(got))
        assert more, "the proxy closed before the greeting"
        got += more
    s.sendall((3).to_bytes(4, "big"))  # client flags: FIXED_NEWSTYLE, NO_ZEROES
    return s


def test_each_rewrite_is_said_once_under_the_engine_session_id(tmp_path: Path) -> None:
    up = free_port()
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"], port=up), \
            console(tmp_path, up, "--quiet", "--clear-flags", "SEND_CACHE") as (con, front):
        run(["nbdinfo", f"nbd://127.0.0.1:{front}"])  # session s1
        run(["nbdinfo", f"nbd://127.0.0.1:{front}"])  # session s2
        ctrl_c(con)
        assert con.finish(30) is not None
    found = [r for r in records(tmp_path) if r.get("check") == "proxy-action.rewrote-flags"]
    # nbdinfo asks NBD_OPT_INFO, then NBD_OPT_GO: two rewrites a session, each in its own reply
    assert sorted((r["session"], r["frame"]) for r in found) == sorted({(r["session"], r["frame"]) for r in found})
    assert {r["session"] for r in found} == {"s1", "s2"} and len(found) == 4
    shown = [x for x in (tmp_path / "console.out").read_text().splitlines() + con.lines if "rewrote" in x]
    assert len(shown) == len(found), shown  # once each, on the console only (no relay log line beside it)
    assert len(set(shown)) == len(shown)  # and no two alike: each says which reply it changed
    assert all(" s1 " in x or " s2 " in x for x in shown)
    assert not [x for x in con.lines if "session 0" in x or "session 1" in x]


def test_ctrl_c_with_a_session_open_warns_and_a_second_closes_it_now(tmp_path: Path) -> None:
    up = free_port()
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"], port=up), \
            console(tmp_path, up, "--quiet", "--grace", "60") as (con, front):
        client = greeted(front)
        try:
            time.sleep(0.5)  # the server's greeting went through: the session is open in the relay
            ctrl_c(con)
            line = con.wait_line("Ctrl-C again", 5)
            assert line is not None, con.lines
            assert "1 session open" in line and "60 s" in line and "--grace" in line
            assert con.finish(1.5) is None, "the first Ctrl-C must leave the open session its grace period"
            ctrl_c(con)
            took = con.finish(15)
            assert took is not None and took < 5, f"a second Ctrl-C must stop the proxy now (took {took})"
            client.settimeout(5)
            try:  # the proxy hung up on the client (aborted: a reset, or a FIN)
                left = client.recv(4096)
            except ConnectionResetError:
                left = b""
            assert left == b""
        finally:
            client.close()
    assert con.proc.returncode == 0
    found = [r for r in records(tmp_path) if r["type"] == "ANOMALY"]
    summary = con.wait_line("nbdscope proxy: 1 session,", 0)
    infos = sum(1 for r in found if r["severity"] == "info")  # the closing, and the handshake's outcome
    assert summary is not None and f"findings: 0 errors, 0 warnings, {infos} info" in summary, con.lines
    closing = [r for r in found if r.get("check") == "proxy-action.closed-at-shutdown"]
    assert len(closing) == 1 and closing[0]["blame"] == "proxy" and closing[0]["session"] == "s1"
    assert "second Ctrl-C" in closing[0]["message"]
    assert not [r for r in found if r["blame"] in ("client", "server")], found  # the closing is no peer's fault


def test_ctrl_c_with_no_session_open_stops_at_once(tmp_path: Path) -> None:
    up = free_port()
    with process(["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"], port=up), \
            console(tmp_path, up, "--quiet", "--grace", "60") as (con, front):
        run(["nbdinfo", f"nbd://127.0.0.1:{front}"])  # a session that came and went
        time.sleep(0.5)
        ctrl_c(con)
        took = con.finish(15)
    assert took is not None and took < 5, took
    assert con.proc.returncode == 0
    assert not [x for x in con.lines if "Ctrl-C again" in x]
    assert con.wait_line("nbdscope proxy: 1 session,", 0) is not None, con.lines
