"""Running real NBD peers and tcpdump on loopback, for the live tests and for
the benchmarks. Every process is stopped by its PID; every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nbdscope.capture.processes import stop_process

SYSTEM_PYTHON = "/usr/bin/python3"  # python3-libnbd (nbdsh) only works with Debian's interpreter
ENV = {**os.environ, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""),
       "LIBNBD_DEBUG": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], oracle: Path | None = None, timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if oracle is not None:
        oracle.write_text(proc.stdout + (f"--- stderr ---\n{proc.stderr}" if proc.stderr else "")
                          + f"--- exit status {proc.returncode} ---\n")
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def wait_port(host: str, port: int, timeout: float = 10, netns: str | None = None) -> None:
    """Wait until something listens, without connecting: a probe connection would be
    captured, and nbd-server -d would spend its single session on it."""
    deadline = time.monotonic() + timeout
    prefix = ["ip", "netns", "exec", netns] if netns else []
    while time.monotonic() < deadline:
        out = subprocess.run([*prefix, "ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


@contextmanager
def process(cmd: list[str], host: str | None = None, port: int | None = None,
            netns: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        if port is not None:
            wait_port(host or "127.0.0.1", port, netns=netns)
        yield proc
    finally:
        stop_process(proc)


@contextmanager
def tcpdump(out: Path, port: int, iface: str = "lo", netns: str | None = None, buffer_kib: int = 65536,
            immediate: bool = True) -> Iterator[None]:
    """Capture one TCP port. Immediate mode suits small exchanges (without it libpcap hands
    packets over in blocks, and a block still in the ring when tcpdump stops is lost); bulk
    transfers need it off and a big buffer, or the kernel drops packets."""
    cmd = [*(["ip", "netns", "exec", netns] if netns else []), "tcpdump", "-i", iface, "-B", str(buffer_kib),
           "-s", "0", "-n", "-w", str(out), *(["-U", "--immediate-mode"] if immediate else []), f"tcp port {port}"]
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        err.seek(0)
        if b"listening on" in err.read():
            break
        time.sleep(0.05)
    try:
        yield
        time.sleep(0.5 if immediate else 2.5)  # let the last ring block reach the file
    finally:
        stop_process(proc, signal.SIGINT, 10)
        err.seek(0)
        report = err.read().decode(errors="replace")
        if "0 packets dropped by kernel" not in report:
            print(f"  tcpdump: {report.strip()}", file=sys.stderr)




def nbdsh(uri: str, script: str, base_allocation: bool = False) -> list[str]:
    return [SYSTEM_PYTHON, "-m", "nbd", *(["--base-allocation"] if base_allocation else []), "-u", uri,
            "-c", script]


@contextmanager
def proxy(tmp: Path, listen: str, upstream: str, *args: str, quiet: bool = True) -> Iterator[subprocess.Popen[str]]:
    """nbdscope proxy writing live.jsonl and live.pcapng into ``tmp`` (its console into proxy.out), once it
    accepts; SIGINT at the end."""
    cmd = [sys.executable, "-m", "nbdscope", "proxy", "--listen", listen, "--upstream", upstream,
           *(["--quiet"] if quiet else []), "--jsonl", str(tmp / "live.jsonl"), "--pcapng", str(tmp / "live.pcapng"),
           *args]
    proc = subprocess.Popen(cmd, stdout=open(tmp / "proxy.out", "w"), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "listening on ..." once it accepts
        assert "listening on" in line, line
        yield proc
    finally:
        stop_process(proc, signal.SIGINT, 20)
