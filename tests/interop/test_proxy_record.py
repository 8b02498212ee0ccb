"""Nothing lost from the proxy's record: every connection the proxy accepted, however briefly it
lived (closed at once, reset, a few bytes of garbage, half an option, an upstream that refused), is a
session in the console, the JSONL and the pcapng, and one that carried no byte blames no peer."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.live import SYSTEM_PYTHON, free_port, nbdsh, process, proxy, run
from tests.oracles import messages

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tshark")) or
                                 not os.path.exists(SYSTEM_PYTHON), reason="needs nbdkit, tshark and nbdsh")]

HOSTILE = 300
WORKERS = 32  # clients at once: enough to race accepts against upstream connects and resets
CONSOLE_MESSAGE = re.compile(r"^\s*(s\d+)\s+\d+\s")  # "  s12     40    0.001 <- CONNECTION_END ..."


def _hostile(front: int, i: int) -> bool:
    """One misbehaving client, the kind chosen by ``i``; True when its connect succeeded."""
    rnd = random.Random(i)
    try:
        s = socket.create_connection(("127.0.0.1", front), timeout=10)
    except OSError:
        return False
    reset = struct.pack("ii", 1, 0)  # SO_LINGER 0: close() sends a RST
    with s:
        try:
            kind = i % 6
            if kind == 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            elif kind in (2, 3):  # garbage of random length, then a FIN (2) or a RST (3)
                s.sendall(rnd.randbytes(rnd.randint(1, 400)))
                if kind == 3:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            elif kind == 4:  # client flags and part of an option header, without waiting for the greeting
                s.sendall((b"\x00\x00\x00\x03IHAVEOPT" + struct.pack(">II", 7, 64))[:rnd.randint(1, 19)])
            elif kind == 5:  # waits for part of the greeting, then resets
                s.recv(rnd.randint(1, 18))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
        except OSError:
            pass  # the proxy may already have let go of it: the connect still counts
    return True


def _storm(front: int, count: int) -> int:
    with ThreadPoolExecutor(WORKERS) as pool:
        return sum(pool.map(lambda i: _hostile(front, i), range(count)))


def _recorded(tmp: Path, upstream_port: int) -> dict[str, set[str] | int]:
    """Sessions in each of the proxy's records."""
    console = {m.group(1) for line in (tmp / "proxy.out").read_text().splitlines()
               if (m := CONSOLE_MESSAGE.match(line))}
    lines = [json.loads(x) for x in (tmp / "live.jsonl").read_text().splitlines()]
    streams = subprocess.run(["tshark", "-r", str(tmp / "live.pcapng"), "-T", "fields", "-e", "tcp.stream"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
    # nbdscope's own reader; sessions that never spoke NBD are found by the port
    report = json.loads(subprocess.run([sys.executable, "-m", "nbdscope", "analyze", "--port", str(upstream_port),
                                        "--format", "json", str(tmp / "live.pcapng")],
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    return {"console": console, "jsonl": {x["session"] for x in lines if "session" in x},
            "ends": sum(1 for x in lines if x["type"] == "CONNECTION_END"),
            "pcapng": len(set(streams)), "reread": len(report["sessions"])}


def _peers_blamed_for_nothing(tmp: Path) -> list[dict]:
    """Findings against a peer on sessions that carried no byte (their only message is the end)."""
    by_session: dict[str, list[dict]] = defaultdict(list)
    for x in map(json.loads, (tmp / "live.jsonl").read_text().splitlines()):
        if "session" in x:
            by_session[x["session"]].append(x)
    empty = [v for v in by_session.values() if [x["type"] for x in messages(v)] == ["CONNECTION_END"]]
    assert empty, "no session carried nothing: the storm tested less than it should"
    return [x for v in empty for x in v if x["type"] == "ANOMALY" and x["blame"] in ("client", "server")]


def test_every_accepted_hostile_connection_is_a_session_everywhere(tmp_path: Path) -> None:
    up, front = free_port(), free_port()
    server = ["nbdkit", "-f", "-p", str(up), "-i", "127.0.0.1", "memory", "1M"]
    with process(server, port=up), proxy(tmp_path, f"127.0.0.1:{front}", f"127.0.0.1:{up}", quiet=False) as px:
        accepted = _storm(front, HOSTILE)
        for _ in range(3):  # and real clients among them
            run(nbdsh(f"nbd://127.0.0.1:{front}", "h.pwrite(b'x' * 512, 0)\nh.pread(512, 0)\nh.shutdown()\n"))
            accepted += 1
    assert px.returncode == 0
    assert accepted == HOSTILE + 3, "some clients could not even connect"
    got = _recorded(tmp_path, up)
    assert len(got["console"]) == len(got["jsonl"]) == got["ends"] == got["pcapng"] == got["reread"] == accepted, got
    assert px.stderr is not None
    assert f"{accepted} sessions" in px.stderr.read()
    assert _peers_blamed_for_nothing(tmp_path) == []


def test_sessions_whose_upstream_failed_are_recorded_and_blame_no_peer(tmp_path: Path) -> None:
    front, dead = free_port(), free_port()  # nothing listens on dead
    with proxy(tmp_path, f"127.0.0.1:{front}", f"127.0.0.1:{dead}", quiet=False) as px:
        accepted = _storm(front, 60)
    assert px.returncode == 0 and accepted == 60
    got = _recorded(tmp_path, dead)
    assert len(got["console"]) == len(got["jsonl"]) == got["ends"] == got["pcapng"] == got["reread"] == accepted, got
    lines = [json.loads(x) for x in (tmp_path / "live.jsonl").read_text().splitlines()]
    failed = [x for x in lines if x["type"] == "ANOMALY" and x["rule"] == "proxy-action"]
    # a client that left before the refusal came back has nothing to be told: at least most see the finding
    assert failed and all(x["check"] == "proxy-action.upstream-failed" and x["blame"] == "proxy" for x in failed)
    assert {x["type"] for x in messages(lines)} == {"CONNECTION_END"}  # nothing passed, in either direction
    assert not [x for x in lines if x["type"] == "ANOMALY" and x["blame"] in ("client", "server")]
