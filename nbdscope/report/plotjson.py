"""The plot data as one JSON object: what the HTML page embeds, what its charts and the TUI's plot screen
are drawn from, and what the tests compare with the JSON report (docs/REPORTS.md lists the fields)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nbdscope.analysis.iohist import LATENCY_STEPS, MAX_BINS, OFFSET_ZERO
from nbdscope.spec import COMMANDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nbdscope.analysis.iomap import IoModel, _Flight

FORMAT = "nbdscope-plots/1"


def _groups(model: IoModel) -> tuple[list[dict[str, Any]], list[int]]:
    """Sessions that talk to the same server about the same export draw one I/O map: their offsets are
    offsets into one disk. Returns the groups and each session's group number."""
    keys: dict[tuple[str, str], int] = {}
    groups: list[dict[str, Any]] = []
    of: list[int] = []
    for s in model.sessions:
        key = (str(s.server), s.export_name or "")
        g = keys.get(key)
        if g is None:
            g = keys[key] = len(groups)
            groups.append({"server": key[0], "export": s.export_name, "size": s.size, "sessions": []})
        groups[g]["sessions"].append(s.id)
        if s.size is not None and (groups[g]["size"] is None or s.size > groups[g]["size"]):
            groups[g]["size"] = s.size
        of.append(g)
    return groups, of


def _points(model: IoModel, extra: Sequence[tuple[_Flight, int]]) -> dict[str, Any]:
    t, lat = list(model.t), list(model.latency)
    sess, cmd = list(model.session_of), list(model.command)
    off, length, err, flags = list(model.offset), list(model.length), list(model.error), list(model.flags)
    for f, more in extra:
        t.append(f.time)
        lat.append(f.latency)
        sess.append(f.session)
        cmd.append(f.command)
        off.append(f.offset)
        length.append(f.length)
        err.append(f.error)
        flags.append(f.flags | more)
    return {"stride": model.stride, "requests": model.requests, "kept": len(t),
            "t": [round(x, 6) for x in t], "latency_us": [None if math.isnan(x) else round(x, 1) for x in lat],
            "session": sess, "command": cmd, "offset": off, "length": length, "error": err, "flags": flags}


def model_json(model: IoModel, extra: Sequence[tuple[_Flight, int]] = ()) -> dict[str, Any]:
    groups, group_of = _groups(model)
    totals: dict[str, dict[str, dict[str, int]]] = {}
    for (s, c), (count, nbytes, errors) in sorted(model.totals.items()):
        totals.setdefault(model.sessions[s].id, {})[COMMANDS.name(c)] = {"count": count, "bytes": nbytes,
                                                                        "errors": errors}
    used = sorted({c for _, c in model.totals} | set(model.sizes) | set(model.latencies))
    return {
        "format": FORMAT,
        "t0": model.t0,
        "commands": {str(c): COMMANDS.name(c) for c in used},
        "sessions": [{"id": s.id, "client": str(s.client), "server": str(s.server), "export": s.export_name,
                      "group": group_of[i]} for i, s in enumerate(model.sessions)],
        "groups": groups,
        "totals": totals,
        "points": _points(model, extra),
        "sizes": {COMMANDS.name(c): h.as_json() for c, h in sorted(model.sizes.items())},
        "offset_zero_alignment": OFFSET_ZERO,
        "latency": {"steps_per_doubling": LATENCY_STEPS,
                    "buckets": {COMMANDS.name(c): {str(b): n for b, n in sorted(per.items())}
                                for c, per in sorted(model.latencies.items())}},
        "throughput": {**model.throughput.as_json(), "max_bins": MAX_BINS},
    }


def alignment_series(data: dict[str, Any]) -> dict[str, dict[int, int]]:
    """Per command, requests by offset alignment (summed over sizes) from the model's JSON: what both the
    HTML figure and the TUI's plot draw."""
    series: dict[str, dict[int, int]] = {}
    for name, h in data["sizes"].items():
        per: dict[int, int] = {}
        for by_align in h["alignment"].values():
            for a, n in by_align.items():
                per[int(a)] = per.get(int(a), 0) + n
        series[name] = per
    return series
