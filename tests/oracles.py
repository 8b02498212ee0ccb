"""Readers for what other tools printed: nbdkit's log filter, qemu-img map,
nbdinfo --map. Tests compare nbdscope's decoding with these."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
ORACLES = CAPTURES / "oracles"

# nbdkit log filter action name -> spec command name
NBDKIT_COMMANDS = {"Read": "NBD_CMD_READ", "Write": "NBD_CMD_WRITE", "Zero": "NBD_CMD_WRITE_ZEROES",
                   "Trim": "NBD_CMD_TRIM", "Extents": "NBD_CMD_BLOCK_STATUS", "Cache": "NBD_CMD_CACHE",
                   "Flush": "NBD_CMD_FLUSH"}
_LINE = re.compile(r"connection=(\d+) (Read|Write|Zero|Trim|Extents|Cache|Flush) id=\d+(.*?) \.\.\.$")
_CONNECT = re.compile(r"connection=(\d+) Connect export=\"(.*?)\" tls=(\d) size=(0x[0-9a-f]+) (.*)$")


@dataclass(frozen=True)
class LoggedRequest:
    command: str
    offset: int
    length: int
    flags: frozenset[str]


def nbdkit_log(path: Path) -> tuple[dict[int, list[LoggedRequest]], dict[int, dict[str, str]]]:
    """Requests per nbdkit connection, and each connection's Connect line fields."""
    requests: dict[int, list[LoggedRequest]] = {}
    connects: dict[int, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        m = _CONNECT.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group(5).split())
            connects[int(m.group(1))] = {"export": m.group(2), "tls": m.group(3), "size": m.group(4), **fields}
            continue
        m = _LINE.search(line)
        if not m:
            continue
        conn, action, rest = int(m.group(1)), m.group(2), m.group(3)
        kv = dict(part.split("=", 1) for part in rest.split() if "=" in part)
        flags = set()
        if kv.get("fua") == "1":
            flags.add("NBD_CMD_FLAG_FUA")
        if action == "Zero" and kv.get("trim") == "0":  # nbdkit prints may_trim as trim
            flags.add("NBD_CMD_FLAG_NO_HOLE")
        if action == "Zero" and kv.get("fast") == "1":
            flags.add("NBD_CMD_FLAG_FAST_ZERO")
        if action == "Extents" and kv.get("req_one") == "1":
            flags.add("NBD_CMD_FLAG_REQ_ONE")
        requests.setdefault(conn, []).append(LoggedRequest(
            NBDKIT_COMMANDS[action], int(kv.get("offset", "0"), 16), int(kv.get("count", "0"), 16),
            frozenset(flags)))
    return requests, connects


def tool_json(path: Path) -> object:
    """JSON a tool printed, without the exit-status trailer the capture script appends."""
    return json.loads(path.read_text().split("--- ")[0])


def nbdinfo_map(path: Path) -> list[tuple[int, int, int]]:
    """(offset, length, type) rows of `nbdinfo --map`."""
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbdscope", "analyze", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def keylog(capture: Path) -> tuple[str, ...]:
    """``--tls-keylog`` with the key log its client wrote, for a TLS capture that ships one."""
    keys = ORACLES / f"{capture.stem}.keys"
    return ("--tls-keylog", str(keys)) if keys.exists() else ()


# the JSONL lines that are not a decoded message (docs/CONTRACT.md, "Recognising a line")
NOT_MESSAGES = frozenset(("ANOMALY", "INPUT", "SESSION", "SESSION_UPDATE", "SESSION_END", "SUMMARY"))


def messages(records: list[dict]) -> list[dict]:
    """The lines of decoded messages among JSONL lines."""
    return [r for r in records if r["type"] not in NOT_MESSAGES]


def jsonl(capture: Path, *extra: str) -> list[dict]:
    proc = analyze("--format", "jsonl", str(capture), *keylog(capture), *extra)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def report(capture: Path, *extra: str) -> dict:
    proc = analyze("--format", "json", str(capture), *keylog(capture), *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def merge_runs(rows: list[tuple[int, int, object]]) -> list[tuple[int, int, object]]:
    """Join adjacent (offset, length, state) rows of equal state."""
    out: list[tuple[int, int, object]] = []
    for off, length, state in rows:
        if out and out[-1][2] == state and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + length, state)
        else:
            out.append((off, length, state))
    return out
