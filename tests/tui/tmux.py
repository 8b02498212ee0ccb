"""Driving a real terminal: nbdscope inside tmux on a private server socket, keys
sent as a person types them, the screen read back with capture-pane."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NBDSCOPE = str(ROOT / ".venv" / "bin" / "nbdscope")


class Tmux:
    """One tmux server of our own (-L), so nothing else's sessions are touched."""

    def __init__(self, command: list[str], width: int = 100, height: int = 30) -> None:
        self.socket = f"nbdscope-test-{os.getpid()}-{time.monotonic_ns()}"
        self.tmux(["new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                   "-c", str(ROOT), " ".join(shlex.quote(c) for c in command)])

    def tmux(self, args: list[str], check: bool = True) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        if check and proc.returncode:
            raise RuntimeError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "t"], check=False)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux(["send-keys", "-t", "t", *(["-l"] if literal else []), *keys])

    def wait_for(self, text: str, timeout: float = 15.0, *, shown: bool = True) -> str:
        """Wait (bounded) until the screen shows ``text`` (or, with ``shown=False``, no longer
        shows it); fail with the last screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if (text in screen) == shown:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never {'appeared' if shown else 'went away'}; screen was:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", "t"], capture_output=True).returncode == 0

    def wait_gone(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.tmux(["kill-server"], check=False)
