"""The HTML report as a file: self-contained, hostile capture text kept as text, the catalogue's
explanations present, and plotted counts equal to the JSON report's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nbdscope.analysis.iomap import ERROR, FINDING
from nbdscope.cli import main
from tests.htmlpages import HOSTILE, TRIM, hostile_capture, plot_data, write_page


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("html")
    cap = hostile_capture(tmp / "hostile.pcap")
    return write_page(cap, tmp / "report.html"), cap


def test_hostile_export_name_stays_text(page: tuple[str, Path]) -> None:
    text, _ = page
    assert "alert" in text  # the name is shown...
    assert "<script>alert" not in text and "<img" not in text  # ...as text only
    assert text.count("<script") == 1  # the plot data's, which nothing executes
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    data = plot_data(text)
    assert [g["export"] for g in data["groups"]] == [HOSTILE]  # type: ignore[index]
    # the embedded JSON cannot close its element: no "<" at all inside it
    body = text.split('id="nbdscope-plot-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body and ">" not in body


def test_page_loads_nothing_from_outside(page: tuple[str, Path]) -> None:
    text, _ = page
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
    assert all(r.startswith(("#", "data:")) for r in refs), [r for r in refs if not r.startswith(("#", "data:"))]
    assert "@import" not in text and "url(http" not in text
    assert "default-src 'none'" in text  # and the browser is told to load nothing else


def test_findings_come_with_the_catalogues_explanation(page: tuple[str, Path]) -> None:
    from nbdscope.report.ruledoc import check_entries

    text, cap = page
    report = _json_report(cap, page)
    checks = {a["check"] for a in report["anomalies"] if a.get("check")}
    assert checks, report["anomalies"]
    for ident in checks:
        entry = check_entries()[ident]
        assert f'id="check-{ident}"' in text
        for words in (entry.check.summary, entry.check.consequence, entry.check.fix):
            assert words and _html(words) in text, (ident, words)


def _html(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def _json_report(cap: Path, page: tuple[str, Path], ) -> dict:  # type: ignore[type-arg]
    out = cap.with_suffix(".json")
    if not out.exists():
        assert main(["analyze", str(cap), "--format", "json", "-o", str(out)]) == 0
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_plotted_counts_equal_the_json_report(page: tuple[str, Path]) -> None:
    text, cap = page
    data = plot_data(text)
    report = _json_report(cap, page)
    want = {s["id"]: {c: {k: v[k] for k in ("count", "bytes", "errors")} for c, v in s["commands"].items()}
            for s in report["sessions"] if s["commands"]}
    assert data["totals"] == want
    assert want["s1"]["NBD_CMD_WRITE"] == {"count": 8, "bytes": 8 * 65536, "errors": 0}
    assert want["s1"]["NBD_CMD_TRIM"]["errors"] == 1
    p = data["points"]  # type: ignore[index]
    assert p["kept"] == 20  # every request but NBD_CMD_DISC
    trim = p["command"].index(TRIM)
    assert p["flags"][trim] & ERROR and p["error"][trim] == 22
    unaligned = [i for i in range(p["kept"]) if p["offset"][i] == 100]
    assert unaligned and p["flags"][unaligned[0]] & FINDING
    sizes = data["sizes"]  # type: ignore[index]
    assert sizes["NBD_CMD_WRITE"]["sizes"] == {"16": [8, 8 * 65536]}
    assert sizes["NBD_CMD_READ"]["sizes"] == {"12": [8, 8 * 4096], "6": [1, 100]}
    # read offsets (i << 20) + 4096 are 4 KiB aligned; 4096 itself (i = 0) too; 100 is 4-byte aligned
    assert sizes["NBD_CMD_READ"]["alignment"] == {"12": {"12": 8}, "6": {"2": 1}}


def test_every_plot_is_in_the_page(page: tuple[str, Path]) -> None:
    text, _ = page
    kinds = re.findall(r'<figure class="plot" id="plot-([a-z-]+)-\d+" data-plot="\1"><figcaption>[^<]*</figcaption>'
                       r"\s*<svg", text)
    assert sorted(kinds) == ["alignment", "iomap", "latency-dist", "latency-time", "sizes", "throughput"]
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), "ids inside the inlined SVGs collide"


@pytest.mark.parametrize("extra", [["--format", "json"], ["--messages"]])
def test_html_with_another_format_is_a_usage_error(tmp_path: Path, extra: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cap = hostile_capture(tmp_path / "c.pcap")
    assert main(["analyze", str(cap), "-o", str(tmp_path / "r.html"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTML report" in err
    assert not (tmp_path / "r.html").exists() or not (tmp_path / "r.html").read_text()
