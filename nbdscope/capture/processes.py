"""Stopping a child process we started: a signal it can act on (tcpdump flushes its
counters on SIGINT), a bounded wait, then SIGKILL, so no caller can hang on it."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 5.0) -> int | None:
    """Returns the exit status, or None if it did not end even after SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                return None
    return proc.returncode
