"""The README and docs/ as a reader meets them: every relative link leads to a file (and, with an
anchor, to a heading there), and every capture command the README shows runs and prints what its
recipe says. The expected words come from captures/README.md (what each capture was made to
hold) and, for the latency, from tshark's frame times (frame 36 at 0.106518 s, frame 41 at
0.109442 s: 2924 us)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.oracles import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
        ROOT / "captures" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?$(.*?)^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower()).replace("_", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    faults = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto: are not ours to check here
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            faults.append(f"{path.relative_to(root)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            faults.append(f"{path.relative_to(root)}: {target}: no such heading")
    return faults


def test_relative_links_resolve() -> None:
    assert [f for p in DOCS for f in broken_links(p)] == []


def test_the_link_check_sees_a_missing_file_and_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n[ok](a.md#two-words) [x](gone.md) [y](#nowhere)\n"
                                   "[web](https://example.org) ![pic](pic.png)\n```\n[in code](skipped.md)\n```\n")
    assert broken_links(tmp_path / "a.md", tmp_path) == ["a.md: gone.md: no such file",
                                                         "a.md: #nowhere: no such heading"]


def test_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    for title in ("## Two commands", "## What it does", "## Reports", "## TLS", "## Troubleshooting"):
        assert f"\n{title}" in text
    for experiment in ("splice", "mypyc", "SCHED_IDLE"):  # abandoned proxy experiments: benchmarks/README.md only
        hits = [p.relative_to(ROOT) for p in DOCS if experiment in p.read_text(encoding="utf-8")]
        assert hits == [Path("benchmarks/README.md")], experiment


# Each capture command of the README and what its output must contain.
RECIPES: dict[str, tuple[str, ...]] = {
    "nbdscope analyze captures/seed-unaligned-extent.pcap": ("unaligned-extent",),
    "nbdscope rules unaligned-extent.length": ("unaligned-extent.length", "minimum block size"),
    "nbdscope analyze captures/tls-psk.pcap": ("the server requires TLS", "encrypted bytes not decoded"),
    "nbdscope analyze captures/tls13-keylog.pcap": ("yes, 13806 encrypted bytes not decoded",),
    # the requests inside TLS are the ones nbdkit's log filter logged (captures/oracles/tls13-keylog.nbdkit.log)
    "nbdscope analyze captures/tls13-keylog.pcap --tls-keylog captures/oracles/tls13-keylog.keys --brief": (
        "TLS, decrypted", "soft"),
    "nbdscope analyze --messages -Y 's2 and handshake' captures/tls-psk.pcap": (
        "->  NBD_OPT_GO", "<-  NBD_REP_ERR_TLS_REQD           option=NBD_OPT_GO"),
    "nbdscope analyze --verify-data captures/stale-read-multi-conn.pcap": ("stale-read.multi-conn", "server"),
    "nbdscope analyze captures/fio-iodepth8.pcap": ("NBD_CMD_READ", "2924", "hard-disconnect"),
    "nbdscope analyze --messages -Y 'latency>1000' captures/fio-iodepth8.pcap": (
        "  s2      41 ", "cookie=0x1 for=NBD_CMD_READ", "latency=2924us"),
    "editcap -s 128 captures/nbdcopy-4conn-nbdkit-memory.pcap cut.pcap && nbdscope analyze cut.pcap": (
        "header-only", "capture"),
    "mkdir set && editcap -c 100 captures/nbdcopy-4conn-nbdkit-memory.pcap set/part.pcap && nbdscope analyze set/": (
        "session s8", "set/part"),
    "zstd captures/fio-iodepth8.pcap -o fio.pcap.zst && nbdscope analyze --format jsonl -Y anomalies fio.pcap.zst": (
        '"rule":"hard-disconnect"',),
    # (what a command writes to report.html counts as its output)
    "nbdscope analyze captures/fio-iodepth8.pcap -o report.html": ("I/O map", "NBD_CMD_READ", "hard-disconnect"),
}
LONG_RUNNING = ("nbdscope proxy ", "nbdscope tui ", "nbdscope live ")  # driven by their own tests


def readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = set()
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = re.split(r"\s+# ", line, maxsplit=1)[0].strip()
            if "nbdscope " in line and "pip install" not in line and not line.startswith(LONG_RUNNING):
                commands.add(line)
    return commands


def test_every_readme_command_has_a_recipe_check() -> None:
    assert readme_commands() == set(RECIPES)


@pytest.mark.parametrize("command", sorted(RECIPES))
def test_readme_command_shows_what_it_says(command: str, tmp_path: Path) -> None:
    for tool in ("editcap", "zstd"):
        if command.startswith(tool) and shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    (tmp_path / "captures").symlink_to(ROOT / "captures")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "report.html"
    shown = proc.stdout + (page.read_text(encoding="utf-8") if page.exists() else "")
    for expected in RECIPES[command]:
        assert expected in shown, f"{command}: {expected!r} not in the output"
