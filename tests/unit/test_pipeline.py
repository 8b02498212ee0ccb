"""The one pipeline: addons that fail are detached and reported once while the rest go on, and
-Y shows only matching messages while findings are computed on everything."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from nbdscope import pipeline
from nbdscope.analysis.addons import Addon
from nbdscope.analysis.engine import Engine
from nbdscope.analysis.session import Session
from nbdscope.capture import read_captures
from nbdscope.cli_common import exit_code as _exit_code
from nbdscope.decoder import events as ev
from nbdscope.report.outputs import JsonlLines
from tests.oracles import CAPTURES, NOT_MESSAGES, messages

FIO = CAPTURES / "fio-iodepth8.pcap"
SEED = CAPTURES / "seed-unaligned-extent.pcap"


class _Boom(Addon):
    """Fails on the third request it sees."""

    def __init__(self) -> None:
        self.seen = 0

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request):
            self.seen += 1
            if self.seen == 3:
                raise ValueError("boom")


def _jsonl(capture: str, *extra: Addon) -> tuple[list[dict[str, object]], object]:
    out = io.BytesIO()
    result = Engine([*extra, JsonlLines(out)]).run(read_captures([capture]))
    return [json.loads(line) for line in out.getvalue().splitlines()], result


def test_a_failing_addon_is_reported_once_and_detached_while_the_others_go_on() -> None:
    boom = _Boom()
    lines, result = _jsonl(str(SEED), boom)
    clean, clean_result = _jsonl(str(SEED))
    internal = [a for a in result.anomalies if a.rule == "internal-error"]  # type: ignore[attr-defined]
    assert len(internal) == 1 and internal[0].blame == "nbdscope"
    assert "_Boom failed in message on Request" in internal[0].message and "boom" in internal[0].message
    assert boom.seen == 3  # never called again after it raised
    # every other output is what a run without the failing addon gives, plus the one internal-error line
    assert [x for x in lines if x.get("rule") != "internal-error"][:-1] == clean[:-1]
    summary, clean_summary = lines[-1], clean[-1]  # the SUMMARY counts the one more error
    assert summary["findings"] == {**clean_summary["findings"], "error": clean_summary["findings"]["error"] + 1}  # type: ignore[index, dict-item, operator]
    assert [a for a in result.anomalies if a.rule != "internal-error"] == clean_result.anomalies  # type: ignore[attr-defined]
    # --fail-on means what it always meant: nbdscope's own failure does not count
    assert _exit_code("error", result) == _exit_code("error", clean_result)  # type: ignore[arg-type]


def test_a_failing_rule_leaves_the_other_rules_their_findings() -> None:
    from nbdscope.analysis.rules import ALL_RULES
    from nbdscope.analysis.rules.blocks import UnalignedExtent

    class Broken(UnalignedExtent):
        def message(self, session: Session, event: ev.Event) -> None:
            raise RuntimeError("rule bug")

    rules = tuple(Broken if r is UnalignedExtent else r for r in ALL_RULES)
    broken = Engine(rules=rules).run(read_captures([str(SEED)]))
    whole = Engine().run(read_captures([str(SEED)]))
    assert [a.rule for a in broken.anomalies].count("internal-error") == 1
    assert "unaligned-extent" in {a.rule for a in whole.anomalies}
    assert ({a.rule for a in broken.anomalies} - {"internal-error"}
            == {a.rule for a in whole.anomalies} - {"unaligned-extent"})


def _cli(*args: str) -> list[dict[str, object]]:
    run = subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_filter_shows_matching_messages_and_every_finding() -> None:
    full = _cli("analyze", "--format", "jsonl", str(FIO))
    shown = _cli("analyze", "--format", "jsonl", "-Y", "cmd=WRITE", str(FIO))
    # the oracle: requests of that command and the replies the decoder matched to them
    expected = [x for x in messages(full) if x.get("command") == "NBD_CMD_WRITE"]
    assert expected and messages(shown) == expected
    assert [x for x in shown if x["type"] == "ANOMALY"] == [x for x in full if x["type"] == "ANOMALY"]
    # the lines about sessions and the run are not messages: the filter keeps them all, where they were
    others = [x for x in full if x["type"] in NOT_MESSAGES]
    assert len(others) > 3 and [x for x in shown if x["type"] in NOT_MESSAGES] == others


def test_filter_can_ask_about_findings() -> None:
    full = _cli("analyze", "--format", "jsonl", str(SEED))
    shown = _cli("analyze", "--format", "jsonl", "-Y", "rule=unaligned-extent", str(SEED))
    flagged = {(x["session"], x["frame"]) for x in full if x.get("rule") == "unaligned-extent"}
    kept = messages(shown)
    assert flagged and {(x["session"], x["frame"]) for x in kept} == flagged
    assert all(x["type"] == "NBD_REPLY_TYPE_BLOCK_STATUS" for x in kept)
    assert [x["type"] for x in shown if x["type"] in NOT_MESSAGES] == \
           [x["type"] for x in full if x["type"] in NOT_MESSAGES]


def test_a_bad_filter_is_a_usage_error() -> None:
    run = subprocess.run([sys.executable, "-m", "nbdscope", "analyze", "--messages", "-Y", "offset>>3", str(FIO)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("nbdscope: error: -Y") and len(run.stderr.splitlines()) == 1


def test_every_command_runs_through_the_one_pipeline() -> None:
    """Nothing outside the engine's own module and pipeline.run builds an engine."""
    import pathlib

    root = pathlib.Path(pipeline.__file__).parent
    builders = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "Engine(" in p.read_text())
    assert builders == ["pipeline.py"]


def test_the_documented_example_output_works() -> None:
    """docs/examples/slow_replies.py, docs/ARCHITECTURE.md's example of a new output, against the JSONL's latencies."""
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples" / "slow_replies.py"
    run = subprocess.run([sys.executable, str(script), str(FIO), "1500"], capture_output=True, text=True,
                         timeout=60, check=True)
    full = _cli("analyze", "--format", "jsonl", str(FIO))
    expected = [f"{x['session']} frame {x['frame']}: {x['command']} took {x['latency_us']:.0f} us"
                for x in full if x.get("latency_us") is not None and x["latency_us"] > 1500]
    assert expected and run.stdout.splitlines() == expected


def test_verify_data_gathers_no_read_that_no_write_could_contradict() -> None:
    """A capture without writes: --verify-data hands over no read data (it cannot matter) and finds what
    a run without it finds; on the stale-read capture the read that contradicts a write is still gathered
    and judged."""
    reads_only = str(CAPTURES / "nbdinfo-list-map.pcap")
    plain = _cli("analyze", "--format", "jsonl", reads_only)
    verified = _cli("analyze", "--format", "jsonl", "--verify-data", reads_only)
    assert not any(x["type"] == "NBD_CMD_WRITE" for x in plain)
    assert any(x["type"] == "NBD_CMD_READ" for x in plain)
    assert not any(x["type"] == "PayloadData" for x in verified)
    assert verified == plain
    stale = _cli("analyze", "--format", "jsonl", "--verify-data", str(CAPTURES / "stale-read-multi-conn.pcap"))
    gathered = [x for x in stale if x["type"] == "PayloadData" and x["kind"] == "read"]
    found = [x for x in stale if x.get("rule") == "stale-read"]
    assert gathered and found and {x["frame"] for x in found} <= {x["frame"] for x in gathered}


def test_tui_listen_takes_every_proxy_option() -> None:
    """One declaration serves both commands: every option of `proxy` (but --tui itself) exists for `tui`."""
    import argparse

    from nbdscope.cli import _parser

    subs = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))

    def options(name: str) -> set[str]:
        return {s for a in subs.choices[name]._actions for s in a.option_strings}

    assert options("proxy") - {"--tui"} <= options("tui")
    args = _parser().parse_args(["tui", "--listen", ":1", "--upstream", ":2", "--set-flags", "CAN_MULTI_CONN",
                                 "--delay", "READ=5", "--pcapng", "x.pcapng", "--redact", "--grace", "1"])
    assert (args.set_flags, args.delay, args.pcapng, args.redact, args.grace) == ("CAN_MULTI_CONN", "READ=5",
                                                                                "x.pcapng", True, 1.0)
