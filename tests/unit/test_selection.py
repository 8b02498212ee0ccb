"""--select / --ignore and the configuration file: which findings are reported, what is counted as
silenced, --fail-on, and the file nbdscope finds by itself (nbdscope.toml, [tool.nbdscope])."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from nbdscope import config
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.selection import Selection, SelectionError, split_ids, validate
from tests import fakerules
from tests.contract.schemas import validator
from tests.oracles import CAPTURES, ROOT

MIXED = CAPTURES / "client-misbehaves-nbdsh.pcap"  # several rules fire here
FIO = CAPTURES / "fio-iodepth8.pcap"  # fio never sends NBD_CMD_DISC


def finding(rule: str, check: str = "", rule_severity: str = "warning") -> Anomaly:
    return Anomaly(rule=rule, severity=rule_severity, blame="client", session="s1", frame=1, time=0.0,  # type: ignore[arg-type]
                   message="m", spec="s", check=check)


def test_the_most_specific_selector_decides() -> None:
    a = finding("bad-reply-chunk", "bad-reply-chunk.error-zero")
    b = finding("bad-reply-chunk", "bad-reply-chunk.other")
    c = finding("cookie-reuse", "cookie-reuse.x")
    keep = Selection(select=("bad-reply-chunk.error-zero",), ignore=("bad-reply-chunk",))
    assert [keep.keeps(x) for x in (a, b, c)] == [True, False, False]
    keep = Selection(select=("bad-reply-chunk",), ignore=("bad-reply-chunk.error-zero",))
    assert [keep.keeps(x) for x in (a, b, c)] == [False, True, False]
    keep = Selection(ignore=("cookie-reuse",))
    assert [keep.keeps(x) for x in (a, b, c)] == [True, True, False]
    keep = Selection(select=("cookie-reuse",), ignore=("cookie-reuse",))  # equal specificity: ignore wins
    assert not keep.keeps(c)
    assert Selection().keeps(c) and Selection(ignore=("x",)).keeps(finding("internal-error"))
    assert not Selection(select=("cookie-reuse",)).keeps(finding("hard-disconnect"))


def test_ids_come_repeated_or_as_comma_lists_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_ids(["a,b", " c ,", "a"]) == ("a", "b", "c")
    assert validate(("hard-disconnect", "cookie-reuse"), "--ignore") == ("hard-disconnect", "cookie-reuse")
    with pytest.raises(SelectionError, match="--ignore 'hard-disconect': no such rule"):
        validate(("hard-disconect",), "--ignore")
    with pytest.raises(SelectionError, match="declares no such check"):
        validate(("cookie-reuse.nothing",), "--select")
    fakerules.install(monkeypatch)
    assert validate((f"{fakerules.RULE}.hazard",), "--select")  # a declared check is a valid id


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_nearest_configuration_file_is_found(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert config.find(deep) is None or not str(config.find(deep)).startswith(str(tmp_path))
    top = _write(tmp_path / "nbdscope.toml", 'ignore = ["hard-disconnect"]\n')
    assert config.find(deep) == top
    _write(tmp_path / "a" / "pyproject.toml", "[project]\nname = 'x'\n")  # no [tool.nbdscope]: passed over
    assert config.find(deep) == top
    project = _write(tmp_path / "a" / "b" / "pyproject.toml", '[tool.nbdscope]\nselect = ["cookie-reuse"]\n')
    assert config.find(deep) == project
    assert config.load(project).select == ("cookie-reuse",)
    own = _write(tmp_path / "a" / "b" / "nbdscope.toml", "ignore = []\n")  # beats pyproject.toml beside it
    assert config.find(deep) == own


def test_command_line_lists_replace_the_files(tmp_path: Path) -> None:
    _write(tmp_path / "nbdscope.toml", 'ignore = ["hard-disconnect"]\nselect = ["cookie-reuse", "hard-disconnect"]\n')
    s = config.selection(None, None, start=tmp_path)
    assert (s.select, s.ignore) == (("cookie-reuse", "hard-disconnect"), ("hard-disconnect",))
    s = config.selection(None, ["unknown-command"], start=tmp_path)
    assert (s.select, s.ignore) == (("cookie-reuse", "hard-disconnect"), ("unknown-command",))
    s = config.selection(["stale-read"], None, start=tmp_path)
    assert (s.select, s.ignore) == (("stale-read",), ("hard-disconnect",))
    assert config.selection(None, None, no_config=True, start=tmp_path) == Selection()


@pytest.mark.parametrize("text, words", [
    ('ignore = ["nope"]\n', "ignore 'nope': no such rule"),
    ("ignore = 'hard-disconnect'\n", "ignore must be a list"),
    ('unknown = ["x"]\n', "unknown key 'unknown'"),
    ("ignore = [\n", "not valid TOML"),
])
def test_a_bad_configuration_file_is_a_one_line_error(tmp_path: Path, text: str, words: str) -> None:
    path = _write(tmp_path / "nbdscope.toml", text)
    with pytest.raises(config.ConfigError, match=words) as err:
        config.selection(None, None, start=tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    done = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", str(FIO)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and words.split("'")[0] in done.stderr


def nbdscope(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def report(capture: Path, *args: str, cwd: Path = ROOT) -> dict:
    done = nbdscope("analyze", "--format", "json", "--no-config", str(capture), *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ignore_and_select_on_a_shipped_capture_against_the_unfiltered_run() -> None:
    full = report(MIXED)
    rules = Counter(a["rule"] for a in full["anomalies"])
    assert len(rules) >= 3 and "selection" not in full  # the capture is worth filtering; no selection, no keys
    ignored, selected = sorted(rules)[:2], sorted(rules)[-1]
    quiet = report(MIXED, "--ignore", ignored[0], "--ignore", ignored[1])
    assert Counter(a["rule"] for a in quiet["anomalies"]) == Counter({r: n for r, n in rules.items()
                                                                      if r not in ignored})
    silenced = Counter(a.get("check") or a["rule"] for a in full["anomalies"] if a["rule"] in ignored)
    assert quiet["silenced"] == dict(silenced) and quiet["selection"]["ignore"] == ignored
    only = report(MIXED, "--select", selected)
    assert Counter(a["rule"] for a in only["anomalies"]) == Counter({selected: rules[selected]})
    assert sum(only["silenced"].values()) == len(full["anomalies"]) - rules[selected]
    comma = report(MIXED, "--ignore", ",".join(ignored))
    assert comma["anomalies"] == quiet["anomalies"]
    for doc in (quiet, only):
        assert list(validator("report").iter_errors(doc)) == []
    # JSONL and the text report say the same
    lines = [json.loads(x) for x in nbdscope("analyze", "--format", "jsonl", "--no-config", str(MIXED), "--select",
                                             selected).stdout.splitlines()]
    assert Counter(x["rule"] for x in lines if x["type"] == "ANOMALY") == Counter({selected: rules[selected]})
    assert lines[-1]["type"] == "SUMMARY" and lines[-1]["silenced"] == only["silenced"] == only["summary"]["silenced"]
    text = nbdscope("analyze", "--no-config", str(MIXED), "--select", selected).stdout
    assert f"{sum(only['silenced'].values())} findings silenced by select {selected}" in " ".join(text.split())


def test_fio_keeps_fail_on_warning_useful_with_ignore(tmp_path: Path) -> None:
    """The CI case of docs/USAGE.md: fio closes without NBD_CMD_DISC, which alone must not fail the job."""
    assert nbdscope("analyze", "--no-config", str(FIO), "--fail-on", "warning").returncode == 1
    done = nbdscope("analyze", "--no-config", str(FIO), "--fail-on", "warning", "--ignore", "hard-disconnect")
    assert done.returncode == 0, done.stdout
    assert "silenced by ignore hard-disconnect" in " ".join(done.stdout.split())
    # the same from a configuration file found by itself, in a parent of the working directory
    _write(tmp_path / "nbdscope.toml", 'ignore = ["hard-disconnect"]\n')
    (tmp_path / "ci").mkdir()
    assert nbdscope("analyze", str(FIO), "--fail-on", "warning", cwd=tmp_path / "ci").returncode == 0
    assert nbdscope("analyze", str(FIO), "--fail-on", "warning", "--no-config", cwd=tmp_path / "ci").returncode == 1
    other = _write(tmp_path / "other.toml", 'ignore = ["cookie-reuse"]\n')
    assert nbdscope("analyze", str(FIO), "--fail-on", "warning", "--config", str(other),
                    cwd=tmp_path / "ci").returncode == 1
    # a selection that leaves the rest: another rule's warning still fails the run
    assert nbdscope("analyze", "--no-config", str(MIXED), "--fail-on", "warning", "--ignore",
                    "hard-disconnect").returncode == 1


@pytest.mark.parametrize("command", [["analyze", str(FIO)], ["live", "-i", "lo"], ["tui", str(FIO)],
                                     ["proxy", "--listen", ":1", "--upstream", ":2"]])
def test_unknown_ids_are_a_one_line_usage_error_on_every_command(command: list[str]) -> None:
    done = nbdscope(*command, "--no-config", "--ignore", "hard-disconnect,no-such-rule")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'no-such-rule'" in done.stderr


def test_the_tui_store_gets_only_selected_findings() -> None:
    from nbdscope.tui.sources import file_producer
    from nbdscope.tui.store import Store

    full, quiet = Store(), Store()
    file_producer(full, [str(MIXED)])._guarded()
    file_producer(quiet, [str(MIXED)], selection=Selection(ignore=("unaligned-request",)))._guarded()
    rules = Counter(f.anomaly.rule for f in full.findings)
    assert rules["unaligned-request"] >= 1
    del rules["unaligned-request"]
    assert Counter(f.anomaly.rule for f in quiet.findings) == rules
