"""The text report as people read it, piped at 80, 120 and 200 columns: findings as wrapped words with
rule ids whole, flags compact, totals in the right plural, and the --messages timeline after the heading
with column titles, a legend and a mark on each message that carries a finding. What the text says
(frames, rules, severities, blame, sessions) is checked against the JSON report of the same run, the
reference for those facts."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Result
from nbdscope.report.text import render
from tests import fakerules
from tests.oracles import CAPTURES

SEED = CAPTURES / "seed-unaligned-extent.pcap"
MIXED = CAPTURES / "client-misbehaves-nbdsh.pcap"  # 2 sessions, 10 findings of 9 checks, errors and warnings
MANY = CAPTURES / "nbdcopy-4conn-nbdkit-memory.pcap"  # 8 sessions, no finding
HEAD = re.compile(r"^frame (\S+)  (error|warning|info)  (\S+)  blame (\S+)  (\S+)$")


def run(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "nbdscope", "analyze", "--no-config", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def report(*args: str) -> dict:
    return json.loads(run("--format", "json", *args).stdout)


def facts(rep: dict) -> list[tuple[str, str, str, str, str]]:
    """(frame, severity, check, blame, session) of each finding of a JSON report, frames named with their
    file when the run read several."""
    many = len(rep["inputs"]) > 1
    return [(f"{os.path.basename(a['input'])}:{a['frame']}" if many else str(a["frame"]), a["severity"],
             a.get("check") or a["rule"], a["blame"], a["session"]) for a in rep["anomalies"]]


@pytest.mark.parametrize("columns", [80, 120, 200])
@pytest.mark.parametrize("capture", [SEED, MIXED])
def test_findings_fit_the_width_and_keep_rule_ids_whole(capture: Path, columns: int) -> None:
    text = run(str(capture), columns=columns).stdout
    lines = text.splitlines()
    assert max(map(len, lines)) <= columns, [x for x in lines if len(x) > columns]
    heads = [i for i, line in enumerate(lines) if HEAD.match(line)]
    rep = report(str(capture))
    assert [HEAD.match(lines[i]).groups() for i in heads] == facts(rep)  # type: ignore[union-attr]
    for i, nxt, a in zip(heads, [*heads[1:], len(lines)], rep["anomalies"], strict=True):
        # the heading line, then the message as words: a line per 60 characters or so, at 80 columns too
        assert nxt - i <= 2 + (len(a["message"]) + 40) // 60, lines[i:nxt]  # (with its time and requirements)
        assert all(line.startswith("    ") for line in lines[i + 1:nxt]) and lines[i + 1].startswith("    at ")
    assert all(line == line.rstrip() for line in lines[heads[0]:])  # no padding after the words


def test_eighty_columns_used_to_break_unaligned_extent() -> None:
    text = run(str(SEED), columns=80).stdout
    assert max(map(len, text.splitlines())) <= 80  # COLUMNS is honoured when piped (it was 140 whatever it said)
    assert text.count("unaligned-extent.length") == 3 and "unaligned-e\n" not in text
    assert "cmd-block-status.11" in text


def test_many_sessions_print_few_lines_before_the_first_finding() -> None:
    """Ten sessions: each panel used to list all 13 flag bits (about 28 lines a session)."""
    text = run(str(MANY), str(SEED), columns=80).stdout
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("frame seed-unaligned-extent.pcap:27  "))
    assert re.match(r"nbdscope: 10 NBD sessions in\s", text) and first <= 10 * 17, first  # (long paths wrap)
    assert not re.search(r"bit +8 ", text)
    assert re.search(r"transmission flags +0x[0-9a-f]{4} HAS_FLAGS\(0\)", text)
    full = run("--bits", str(SEED), columns=80).stdout
    assert len(re.findall(r"bit +8 +- +NBD_FLAG_CAN_MULTI_CONN", full)) == 2  # --bits: today's table, per session


def test_totals_are_pluralised() -> None:
    one = Anomaly(rule="views-fake-rule", severity="warning", blame="server", session="s1", frame=7, time=0.5,
                  message="something odd", spec="Transmission", check="views-fake-rule.should-broken")
    session = fakerules.session()
    session.anomaly_count = 1
    out = io.StringIO()
    from rich.console import Console

    render(Result([session], [one]), ["x.pcap"], Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert "nbdscope: 1 NBD session in x.pcap" in text and re.search(r"session s1  [\d.]+ to [\d.]+  1 anomaly ", text)
    assert "\n1 anomaly\n" in text and "anomalies" not in text and "(s)" not in text
    two = run(str(SEED)).stdout
    assert "2 NBD sessions" in two and "\n3 anomalies\n" in two and re.search(r"session s2  [\d.]+ to [\d.]+  1 anomaly ", two)


def _timeline(text: str) -> tuple[list[str], list[str]]:
    """The lines from the column heading to the blank line closing the timeline; and those before it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["sess", "frame"]
                 and line.split()[-3:] == ["dir", "type", "details"])
    end = lines.index("", start)
    return lines[start + 1:end], lines[:start]


MESSAGE = re.compile(r"^([ !?*]) +(s\d+) +(\d+) +(\S+) (->|<-) +(\S+)")
NOTE = re.compile(r"^ {8}(error|warning|info) (\S+) blame=(\S+): ")


@pytest.mark.parametrize("capture", [SEED, MIXED])
def test_messages_come_after_the_heading_with_a_legend_and_marks(capture: Path) -> None:
    rep = report(str(capture))
    text = run("--messages", str(capture)).stdout
    rows, before = _timeline(text)
    legend = next(i for i, line in enumerate(before) if re.match(r"^ +s\d+  ", line))  # the heading may wrap
    assert " ".join(before[:legend]).startswith(f"nbdscope: {len(rep['sessions'])} NBD sessions in ")
    assert before[legend:] == [f"{s['id']:>4}  {s['client']} -> {s['server']}  export {s['export']['name']!r}"
                          for s in rep["sessions"]]
    seen: list[tuple[str, str, str, str, str]] = []
    marked: dict[tuple[str, str], str] = {}
    where: tuple[str, str] | None = None
    for row in rows:
        m, n = MESSAGE.match(row), NOTE.match(row)
        if m:
            where = (m.group(3), m.group(2))
            if m.group(1) != " ":
                marked[where] = m.group(1)
        elif n:
            assert where is not None
            seen.append((where[0], n.group(1), n.group(2), n.group(3), where[1]))
        else:  # a finding about no message shown gets a line of its own
            alone = re.match(r"^ANOMALY (\S+) (\S+) blame=(\S+) (\S*) frame (\d+) at \S+: ", row)
            assert alone, row
            seen.append((alone.group(5), alone.group(1), alone.group(2), alone.group(3), alone.group(4)))
    assert sorted(seen) == sorted(facts(rep))
    worst = {}
    for frame, severity, _, _, session in facts(rep):
        if (frame, session) in marked:
            rank = "info warning error".split()
            worst[(frame, session)] = max(worst.get((frame, session), "info"), severity, key=rank.index)
    assert marked == {k: {"error": "!", "warning": "?", "info": "*"}[v] for k, v in worst.items()}
    assert marked, "no finding was marked on its message"


def test_timeline_times_on_each_base() -> None:
    rel = [MESSAGE.match(r) for r in _timeline(run("--messages", str(SEED)).stdout)[0]]
    delta = [MESSAGE.match(r) for r in _timeline(run("--messages", "--time", "delta", str(SEED)).stdout)[0]]
    rel_t = [float(m.group(4)) for m in rel if m]
    delta_t = [float(m.group(4)) for m in delta if m]
    assert len(rel_t) == len(delta_t) > 20
    assert abs(sum(delta_t) - rel_t[-1]) < 1e-4  # each delta since the line before, the first since packet 1
    text = run("--messages", "--time", "abs", str(SEED)).stdout
    assert "time (ISO 8601)" in text
    first = next(m for m in map(MESSAGE.match, _timeline(text)[0]) if m)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d", first.group(4))


def test_brief_is_one_line_per_finding_and_session_matching_the_json() -> None:
    rep = report(str(MIXED))
    done = run("--brief", str(MIXED), columns=80)
    lines = done.stdout.splitlines()
    n = len(rep["anomalies"])
    finding_lines, rest, totals = lines[:n], lines[n:-1], lines[-1]
    fix_lines = [line for line in rest if line.startswith("fix ")]
    session_lines = rest[len(fix_lines):]
    checks = list(dict.fromkeys(a["check"] for a in rep["anomalies"]))  # each check once, in order of appearance
    assert [line.split()[1] for line in fix_lines] == checks
    wide = run("--brief", str(MIXED), columns=400).stdout.splitlines()
    for check in checks:  # what to do, as `nbdscope rules CHECK --format json` gives it
        fix = json.loads(subprocess.run([sys.executable, "-m", "nbdscope", "rules", check, "--format", "json"],
                                        capture_output=True, text=True, timeout=60).stdout)["checks"][0]["fix"]
        assert any(line.startswith("fix ") and line.split(None, 2)[1] == check and line.endswith(fix) for line in wide)
    got = [tuple(line.split()[i] for i in (0, 2, 3, 4, 5)) for line in finding_lines]
    assert got == facts(rep)
    start = {len(re.match(r"^((?:\S+ +){6})", line).group(1)) for line in finding_lines}  # type: ignore[union-attr]
    assert len(start) == 1  # the message column begins at one place
    lead = start.pop()  # the line fits, or the other columns left less than 24 characters and 24 are kept
    assert all(len(line) <= 80 or len(line) - lead == 24 for line in finding_lines)
    assert any(line.endswith("…") for line in finding_lines)  # cut, never wrapped
    assert [line.split()[0] for line in session_lines] == [s["id"] for s in rep["sessions"]]
    assert session_lines[0].split()[1:4] == [rep["sessions"][0]["client"], "->", rep["sessions"][0]["server"]]
    assert "6 errors, 3 warnings" in session_lines[0] and "1 warning" in session_lines[1]
    assert totals == "2 sessions, 10 anomalies (6 errors, 4 warnings)"
    wide = run("--brief", str(MIXED), columns=200).stdout.splitlines()
    for line, a in zip(wide[:n], rep["anomalies"], strict=True):
        shown = line[lead:]
        assert len(line) <= 200 and (shown == a["message"] or (shown.endswith("…") and len(line) == 200
                                                              and a["message"].startswith(shown[:-1])))
    assert sum(line[lead:] == a["message"] for line, a in zip(wide, rep["anomalies"], strict=False)) == n - 1


def test_brief_with_several_files_selection_fail_on_filter_and_time() -> None:
    both = report(str(SEED), str(MIXED))
    lines = run("--brief", str(SEED), str(MIXED), columns=200).stdout.splitlines()
    assert [tuple(x.split()[i] for i in (0, 2, 3, 4, 5)) for x in lines[:13]] == facts(both)
    assert lines[0].startswith("seed-unaligned-extent.pcap:27 ")
    only = run("--brief", "--select", "unaligned-request", str(MIXED), columns=200)
    assert [x.split()[3] for x in only.stdout.splitlines()[:2]] == ["unaligned-request.unaligned",
                                                                    "unaligned-request.accepted"]
    assert "silenced by select unaligned-request" in only.stdout.splitlines()[-1]
    assert run("--brief", "--fail-on", "error", str(MIXED)).returncode == 1
    assert run("--brief", "--fail-on", "error", str(SEED)).returncode == 0
    s2 = run("--brief", "-Y", "s2", str(MIXED), columns=200).stdout.splitlines()
    assert [x.split()[5] for x in s2 if HEAD_BRIEF.match(x)] == ["s2"]
    assert s2[-1].endswith(", 1 on the messages -Y keeps")
    rel = run("--brief", str(SEED), columns=200).stdout.splitlines()[:3]
    delta = run("--brief", "--time", "delta", str(SEED), columns=200).stdout.splitlines()[:3]
    times = [a["time"] for a in report(str(SEED))["anomalies"]]
    assert [float(x.split()[1]) for x in rel] == times  # as the JSON says
    steps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert [float(x.split()[1]) for x in delta] == pytest.approx(steps, abs=2e-6)
    assert all(x.split()[1].startswith("+") for x in delta)


HEAD_BRIEF = re.compile(r"^\S+  +\S+  +(error|warning|info)  ")


def _console(capture: Path, **options: object) -> list[str]:
    """What the live and proxy console print for a capture (the same TimelineLines, streaming)."""
    from nbdscope import pipeline
    from nbdscope.report.outputs import TimelineLines

    out = io.StringIO()
    pipeline.run(pipeline.FileSource([str(capture)]), [TimelineLines(out, findings=True, **options)])  # type: ignore[arg-type]
    return out.getvalue().splitlines()


def test_the_streaming_console_writes_legends_as_sessions_appear_and_marks_findings() -> None:
    rep = report(str(SEED))
    lines = _console(SEED)
    assert lines[0].split()[:2] == ["sess", "frame"]
    for s in rep["sessions"]:  # a session's legend comes just before its first message
        at = lines.index(f"{s['id']:>4}  {s['client']} -> {s['server']}")  # (the export is not known yet)
        assert MESSAGE.match(lines[at + 1]).group(2) == s["id"]  # type: ignore[union-attr]
    marked = [(m.group(3), m.group(2)) for m in map(MESSAGE.match, lines) if m and m.group(1) == "?"]
    assert marked == [(f, s) for f, _, _, _, s in facts(rep)]
    assert sum(1 for x in lines if NOTE.match(x)) == 3
    quiet = _console(SEED, messages=False, time="abs")  # proxy --quiet: findings only, each on its own line
    assert len(quiet) == 3 and all(x.startswith("ANOMALY warning unaligned-extent.length blame=server ") for x in quiet)
    assert re.search(r" frame 27 at \d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d: extent of 1000 bytes", quiet[0])
