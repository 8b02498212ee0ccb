"""`--help` as a reference: every argument of every command described, each default that means
something shown, and the exit codes each epilog lists are the ones the program returns (each
one produced for real below, so an epilog that promises a code nobody returns fails)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbdscope.cli import _parser
from nbdscope.cli_help import HelpFormatter, has_default, subparsers
from tests.live import free_port
from tests.oracles import CAPTURES, ROOT

SEED = CAPTURES / "seed-unaligned-extent.pcap"
NBDSCOPE = [sys.executable, "-m", "nbdscope"]
COMMANDS = ("analyze", "live", "proxy", "tui", "rules")


def _parsers(parser: argparse.ArgumentParser, name: str = "nbdscope") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for sub, p in subparsers(parser).items():
        yield from _parsers(p, f"{name} {sub}")


def undescribed(parser: argparse.ArgumentParser) -> list[str]:
    """Each argument of the parser and its commands without help text, or whose default is not shown."""
    faults = []
    for name, p in _parsers(parser):
        formatter = p._get_formatter()
        for action in p._actions:
            label = f"{name} {'/'.join(action.option_strings) or action.metavar or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                faults.append(f"{label}: no help text")
            elif has_default(action) and f"default: {action.default}" not in formatter._expand_help(action):
                faults.append(f"{label}: default {action.default!r} not shown")
    return faults


def test_every_argument_is_described_with_its_default() -> None:
    assert undescribed(_parser()) == []


def test_the_check_catches_a_bare_option_and_a_hidden_default() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.HelpFormatter)
    sub = p.add_subparsers(help="commands")
    q = sub.add_parser("q", formatter_class=argparse.HelpFormatter)
    q.add_argument("--bare", default="x")
    q.add_argument("--quiet-default", type=int, default=7, help="a number")
    q.add_argument("--off", action="store_true", help="a switch (a False default shows nothing)")
    q.add_argument("--many", action="append", default=[], help="repeatable (an empty list shows nothing)")
    assert undescribed(p) == ["nbdscope q --bare: no help text", "nbdscope q --quiet-default: default 7 not shown"]
    q.formatter_class = HelpFormatter
    q._actions[1].help = "set"
    assert undescribed(p) == []


def test_defaults_show_in_the_rendered_help() -> None:
    text = " ".join(subprocess.run([*NBDSCOPE, "live", "--help"], capture_output=True, text=True, check=True,
                                   timeout=60).stdout.split())
    assert "(default: tcp)" in text and "(default: 65536)" in text and "(default: never)" in text
    assert "default: False" not in text and "default: []" not in text  # switches and --port show none


def epilog_codes(command: str | None) -> set[int]:
    text = subprocess.run([*NBDSCOPE, *([command] if command else []), "--help"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    table = text[text.index("\nexit status:\n"):]
    return {int(c) for c in re.findall(r"^  (\d+) ", table, re.M)}


# --- one real run per (command, exit code) ---------------------------------------------------------------------------

def _run(*args: str) -> int:
    return subprocess.run([*NBDSCOPE, *args], capture_output=True, timeout=60, cwd=ROOT).returncode


def _interrupt_analyze() -> int:
    """analyze waits on a FIFO that holds a pcap header and nothing more; Ctrl-C ends it."""
    with tempfile.TemporaryDirectory() as d:
        fifo = Path(d) / "capture"
        os.mkfifo(fifo)
        proc = subprocess.Popen([*NBDSCOPE, "analyze", str(fifo)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        with open(fifo, "wb") as w:
            w.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            w.flush()
            time.sleep(1.5)
            proc.send_signal(signal.SIGINT)
            return proc.wait(timeout=30)


def _wait_stderr(proc: subprocess.Popen[str], text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never printed {text!r}")


def _proxy_stopped() -> int:
    proc = subprocess.Popen([*NBDSCOPE, "proxy", "--listen", f"127.0.0.1:{free_port()}",
                             "--upstream", f"127.0.0.1:{free_port()}", "--no-config"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_stderr(proc, "listening on")
        return _interrupted(proc)
    finally:
        _reap(proc)


def _interrupted(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C, as a terminal sends it; the exit status."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _live(fail_on: str) -> int:
    """live on loopback while a fake server greets and the client answers with a reserved flag bit
    (reserved-bits-set, an error) and hangs up; then Ctrl-C."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        proc = subprocess.Popen([*NBDSCOPE, "live", "-i", "lo", "--port", str(port), "--filter", f"tcp port {port}",
                                 "--fail-on", fail_on, "--no-config"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_stderr(proc, "capturing on")
            time.sleep(1)  # tcpdump announces itself a little before it captures
            with socket.create_connection(("127.0.0.1", port)) as client:
                server, _ = srv.accept()
                with server:
                    server.sendall(b"NBDMAGICIHAVEOPT" + struct.pack(">H", 3))
                    client.recv(18)
                    client.sendall(struct.pack(">I", 0x80000003))
                    time.sleep(0.3)
            time.sleep(2.5)  # tcpdump hands packets over in batches
            return _interrupted(proc)
        finally:
            _reap(proc)


def _tui_quit() -> int:
    from tests.tui.tmux import Tmux

    with tempfile.TemporaryDirectory() as d:
        status = Path(d) / "status"
        t = Tmux(["sh", "-c", f"{' '.join(NBDSCOPE)} tui {SEED} --no-config; echo $? > {status}"], 100, 30)
        try:
            t.wait_for("unaligned-extent")
            t.keys("q")
            deadline = time.monotonic() + 20
            while not status.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            return int(status.read_text())
        finally:
            t.close()


LIVE = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None, reason="needs root and tcpdump")
TMUX = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
CASES: dict[tuple[str, int], tuple[Callable[[], int], list[pytest.MarkDecorator]]] = {
    ("analyze", 0): (lambda: _run("analyze", "--fail-on", "error", str(SEED)), []),  # the seed's finding: a warning
    ("analyze", 1): (lambda: _run("analyze", "--fail-on", "warning", str(SEED)), []),
    ("analyze", 2): (lambda: _run("analyze", str(CAPTURES / "no-such.pcap")), []),
    ("analyze", 130): (_interrupt_analyze, []),
    ("live", 0): (lambda: _live("never"), [LIVE]),
    ("live", 1): (lambda: _live("error"), [LIVE]),
    ("live", 2): (lambda: _run("live", "-i", "no-such-interface"), []),
    ("proxy", 0): (_proxy_stopped, []),
    ("proxy", 2): (lambda: _run("proxy", "--listen", "nowhere", "--upstream", ":10809"), []),
    ("tui", 0): (_tui_quit, [TMUX]),
    ("tui", 2): (lambda: _run("tui", str(SEED)), []),  # stdout is a pipe here, not a terminal
    ("rules", 0): (lambda: _run("rules", "unaligned-extent"), []),
    ("rules", 2): (lambda: _run("rules", "no-such-rule"), []),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_epilog_lists_the_codes_its_command_returns(command: str) -> None:
    assert epilog_codes(command) == {code for (c, code) in CASES if c == command}


def test_the_top_level_epilog_lists_every_code() -> None:
    assert epilog_codes(None) == {code for (_, code) in CASES}


@pytest.mark.parametrize("command,code", [pytest.param(*key, marks=marks, id=f"{key[0]}-{key[1]}")
                                          for key, (_, marks) in CASES.items()])
def test_the_program_returns_the_code(command: str, code: int) -> None:
    assert CASES[command, code][0]() == code
