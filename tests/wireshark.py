"""Run tshark with the nbdscope Lua plugin and bring what it decoded into the
shape of `nbdscope analyze --format jsonl`, so the two decoders can be compared
message by message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.oracles import ROOT

PLUGIN = ROOT / "dissectors" / "nbdscope.lua"
TSHARK = shutil.which("tshark")

# analyze events that are bookkeeping, not messages on the wire
NOT_ON_WIRE = {"TRANSMISSION_START", "CONNECTION_END", "TLS_START", "TLS_DATA", "CAPTURE_GAP", "RESYNC", "ANOMALY",
               "INPUT", "SESSION", "SESSION_UPDATE", "SESSION_END", "SUMMARY"}


def tshark(*args: str, plugin: Path = PLUGIN, timeout: float = 300) -> str:
    """tshark with the plugin loaded; raises with tshark's stderr when it fails or the Lua does not load."""
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-X", f"lua_script:{plugin}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    errors = [line for line in done.stderr.splitlines() if "Lua" in line or "lua" in line]
    if done.returncode != 0 or errors:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def _one(v: Any) -> Any:
    return v[0] if isinstance(v, list) else v


def _int(v: Any) -> int | None:
    v = _one(v)
    return None if v is None else int(v, 0)


def _layers(layer: Any) -> list[dict[str, Any]]:
    return layer if isinstance(layer, list) else [layer]


def _flatten(tree: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Fields of one nbdscope PDU, subtrees merged in; repeated names become lists."""
    for key, value in tree.items():
        if isinstance(value, dict):
            _flatten(value, out)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for sub in value:
                _flatten(sub, out)
        elif key in out:
            prev = out[key] if isinstance(out[key], list) else [out[key]]
            out[key] = prev + (value if isinstance(value, list) else [value])
        else:
            out[key] = value
    return out


def plugin_messages(capture: Path, *extra: str) -> list[dict[str, Any]]:
    """Every PDU the plugin decoded: frame, TCP stream and client port, and the compared fields."""
    doc = json.loads(tshark("-r", str(capture), "-Y", "nbdscope", "-T", "json", "-J", "frame tcp nbdscope",
                            "--no-duplicate-keys", *extra) or "[]")
    out = []
    for packet in doc:
        layers = packet["_source"]["layers"]
        tcp = _one(layers["tcp"])
        for pdu in _layers(layers["nbdscope"]):
            f = _flatten(pdu, {})
            d = _one(f["nbdscope.dir"])
            client_port = int(_one(tcp["tcp.srcport"] if d == "c2s" else tcp["tcp.dstport"]))
            out.append({"frame": int(packet["_source"]["layers"].get("frame", {}).get("frame.number", 0) or 0),
                        "stream": int(_one(tcp["tcp.stream"])), "client_port": client_port, "dir": d,
                        "fields": f, "experts": _experts(f)})
    return out


def _experts(f: dict[str, Any]) -> list[str]:
    """The rule id of each expert info (the text starts with ``rule.check:`` or ``rule:``)."""
    return [ident.split(".", 1)[0] for ident, _ in expert_infos(f)]


# Wireshark's expert severities (epan/proto.h PI_NOTE, PI_WARN, PI_ERROR) as nbdscope names them
EXPERT_SEVERITY = {0x00400000: "info", 0x00600000: "warning", 0x00800000: "error"}


def expert_infos(f: dict[str, Any]) -> list[tuple[str, str]]:
    """(the id the expert text starts with, its severity) for each expert info of one PDU."""
    msgs, sevs = f.get("_ws.expert.message", []), f.get("_ws.expert.severity", [])
    msgs, sevs = (msgs if isinstance(msgs, list) else [msgs]), (sevs if isinstance(sevs, list) else [sevs])
    return [(m.split(":", 1)[0], EXPERT_SEVERITY.get(int(s), s)) for m, s in zip(msgs, sevs, strict=True)]


def plugin_key(f: dict[str, Any]) -> tuple[Any, ...]:
    """The compared values of one plugin PDU."""
    t = _one(f["nbdscope.msgtype"])
    offsets = _all(f.get("nbdscope.reply.offset")) + _all(f.get("nbdscope.offset"))
    return _key(t, cookie=_int(f.get("nbdscope.cookie")), offsets=offsets,
                length=_int(f.get("nbdscope.length")), error=_int(f.get("nbdscope.error")),
                flags=_int(f.get("nbdscope.cmd.flags") or f.get("nbdscope.reply.flags") or f.get("nbdscope.cflags")
                           or f.get("nbdscope.hflags")),
                option=_int(f.get("nbdscope.opt")), tflags=_int(f.get("nbdscope.tflags")),
                size=_int(f.get("nbdscope.size")), extents=tuple(zip(_all(f.get("nbdscope.extent.length")),
                                                                     _all(f.get("nbdscope.extent.status")),
                                                                     _strs(f.get("nbdscope.extent.state")),
                                                                     strict=True)))


def _strs(v: Any) -> tuple[str, ...]:
    return () if v is None else tuple(v if isinstance(v, list) else [v])


def _all(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    return tuple(int(x, 0) for x in (v if isinstance(v, list) else [v]))


def analyze_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """The same values from one `analyze --format jsonl` record."""
    from nbdscope.spec import OPTIONS

    flags = r.get("flags") or r.get("handshake_flags")
    offsets = tuple(x for x in (r.get("header_offset"), r.get("offset")) if x is not None)
    length = r.get("length")
    if r["type"].startswith("NBD_OPT_") or (r["type"].startswith("NBD_REP_")):
        length = None  # compared through the option itself
    opt = r.get("option")
    return _key(r["type"], cookie=r.get("cookie"), offsets=offsets, length=length, error=r.get("error"),
                flags=flags["value"] if flags else None,
                option=OPTIONS.by_name(opt).value if opt and OPTIONS.by_name(opt) else None,
                tflags=(r.get("transmission_flags") or {}).get("value"), size=r.get("size"),
                extents=tuple((e["length"], e["status"], e["state"]) for e in r.get("extents", ())))


def _key(t: str, *, cookie: int | None, offsets: tuple[int, ...], length: int | None, error: int | None,
         flags: int | None, option: int | None, tflags: int | None, size: int | None,
         extents: tuple[tuple[int, int, str], ...]) -> tuple[Any, ...]:
    if t.startswith("NBD_CMD_"):
        return (t, cookie, offsets, length, flags)
    if t == "NBD_SIMPLE_REPLY":
        return (t, cookie, error)
    if t.startswith("NBD_REPLY_TYPE_"):
        return (t, cookie, flags, offsets, error, extents)
    if t.startswith("NBD_OPT_") or t.startswith("NBD_REP_"):
        return (t, option, tflags, size)
    return (t, flags, tflags, size)


def analyze_records(capture: Path, *extra: str) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", "--format", "jsonl", str(capture), *extra],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return [json.loads(line) for line in done.stdout.splitlines()]


def analyze_sessions(capture: Path) -> dict[str, int]:
    """session id -> client port."""
    done = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", "--format", "json", str(capture)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return {s["id"]: int(s["client"].rsplit(":", 1)[1]) for s in json.loads(done.stdout)["sessions"]}
