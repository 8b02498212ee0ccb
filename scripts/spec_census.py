"""Count the normative keywords of the pinned NBD spec, per section, into nbdscope/spec/census.json.

The requirement table (nbdscope/spec/requirements/) must hold one row for every MUST, MUST NOT,
SHOULD and SHOULD NOT of doc/proto.md at the pinned master commit, and for every such keyword on a
line the extension-ext-header branch adds. The census is the list the tests hold the table to; it
is made from the spec itself, so a row can be neither dropped nor invented. MAY occurrences are
listed too: a MAY row of the table must point at one of them.

    python3 scripts/spec_census.py /path/to/nbd.git          # rewrite the census
    python3 scripts/spec_census.py /path/to/nbd.git --check  # exit 1 when it is stale

The spec text is not copied into the project; only section names, line numbers and keywords.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

MASTER = "89ba7b5379548d6ebbfa36db15f2b8e3787a09ea"
EXT_BRANCH = "e6f3b94a9345cd36d36774694ab298e25003afe6"  # extension-ext-header
EXT_BASE = "daf3fce989b23cc8c9023f28e0eec2f074c9f1bd"  # where that branch left master
OUT = Path(__file__).resolve().parent.parent / "nbdscope" / "spec" / "census.json"

KEYWORD = re.compile(r"\b(MUST(?:\s+NOT)?|SHOULD(?:\s+NOT)?|MAY)\b")
ITEM = re.compile(r"^[-*] `NBD_([A-Z0-9_]+)`")
HEADING = re.compile(r"^(#+)\s+(.*?)\s*$")
# short, stable slugs for the headings whose statements become rows
SLUGS = {
    "The NBD protocol": "intro", "Introduction": "intro", "Conventions": "conventions",
    "Protocol phases": "phases", "Handshake": "handshake", "Oldstyle negotiation": "oldstyle",
    "Newstyle negotiation": "newstyle", "Fixed newstyle negotiation": "fixed-newstyle",
    "Termination of the session during option haggling": "haggle-end", "Transmission": "transmission",
    "Ordering of messages and writes": "ordering", "Request message": "request",
    "Simple reply message": "simple-reply", "Structured reply chunk message": "chunk",
    "Terminating the transmission phase": "transmission-end", "Reserved Magic values": "magics",
    "TLS support": "tls", "Certificates, authentication and authorisation": "tls-certs",
    "Server-side requirements": "tls-server", "NOTLS mode": "notls", "FORCEDTLS mode": "forcedtls",
    "SELECTIVETLS mode": "selectivetls", "Client-side requirements": "tls-client",
    "Security considerations": "security", "TLS versions": "tls-versions",
    "Protocol downgrade attacks": "downgrade", "Size constraints": "sizes",
    "Metadata querying": "metadata", "The `base:` metadata namespace": "base-ns",
    "`base:allocation` metadata context": "base-allocation", "Values": "values",
    "Handshake phase": "values", "Flag fields": "values", "Handshake flags": "hflags",
    "Client flags": "cflags", "Transmission flags": "tflags", "Option types": "opt",
    "Option reply types": "rep", "Transmission phase": "values", "Command flags": "cmdflags",
    "Structured reply flags": "replyflags", "Structured reply types": "reply-type",
    "Request types": "cmd", "Error values": "errors", "Experimental extensions": "experimental",
    "Compatibility and interoperability": "compat", "Baseline": "baseline",
    "Maximum interoperability": "interop", "Future considerations": "future",
    "About this file": "about", "Request message header": "request",
    "Simple reply message header": "simple-reply", "Extended headers": "ext-headers",
    "Structured reply message": "chunk", "Extended reply message": "ext-reply",
    "Extended reply chunk message": "ext-reply", "Structured and extended header reply flags": "replyflags",
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _sections(lines: list[str]) -> list[tuple[str, str]]:
    """(heading, slug) for each line: the nearest heading above, refined by a top-level
    ``* `NBD_...` `` item inside the value lists (options, replies, commands)."""
    out: list[tuple[str, str]] = []
    heading, slug, item = "", "intro", ""
    in_code = False
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else HEADING.match(line)
        if m:
            heading = m.group(2)
            if heading not in SLUGS:
                raise SystemExit(f"spec_census: no slug for heading {heading!r}; add one to SLUGS")
            slug, item = SLUGS[heading], ""
        elif (i := ITEM.match(line)) and slug in {"opt", "rep", "reply-type", "cmd"}:
            name = i.group(1).lower().replace("_", "-")
            item = name
        out.append((heading, item or slug))
    return out


def _occurrences(text: str, prefix: str, only_lines: set[int] | None = None) -> list[dict[str, object]]:
    lines = text.split("\n")
    sections = _sections(lines)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    out: list[dict[str, object]] = []
    ordinal: dict[str, int] = {}
    line_no = 0
    for m in KEYWORD.finditer(text):
        while starts[line_no + 1] <= m.start():
            line_no += 1
        if only_lines is not None and line_no + 1 not in only_lines:
            continue
        keyword = re.sub(r"\s+", " ", m.group(1))
        heading, slug = sections[line_no]
        key = f"{prefix}{slug}" + (".may" if keyword == "MAY" else "")
        ordinal[key] = ordinal.get(key, 0) + 1
        out.append({"id": f"{key}.{ordinal[key]}", "section": heading, "line": line_no + 1, "keyword": keyword})
    return out


def _added_lines(repo: Path) -> set[int]:
    """Line numbers (in the branch's proto.md) of lines the ext-header branch adds or rewrites."""
    diff = _git(repo, "diff", "-U0", EXT_BASE, EXT_BRANCH, "--", "doc/proto.md")
    added: set[int] = set()
    for m in re.finditer(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", diff, re.M):
        start, count = int(m.group(1)), int(m.group(2) or 1)
        added.update(range(start, start + count))
    return added


def census(repo: Path) -> dict[str, object]:
    master = _git(repo, "show", f"{MASTER}:doc/proto.md")
    branch = _git(repo, "show", f"{EXT_BRANCH}:doc/proto.md")
    return {
        "about": "normative keywords of NetworkBlockDevice/nbd doc/proto.md; made by scripts/spec_census.py",
        "master": {"commit": MASTER, "sha256": hashlib.sha256(master.encode()).hexdigest(),
                   "keywords": _occurrences(master, "")},
        "ext-header": {"commit": EXT_BRANCH, "base": EXT_BASE,
                       "sha256": hashlib.sha256(branch.encode()).hexdigest(),
                       "keywords": _occurrences(branch, "ext.", _added_lines(repo))},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repo", type=Path, help="a git clone of NetworkBlockDevice/nbd holding both commits")
    p.add_argument("--check", action="store_true", help="compare with the committed census instead of writing")
    a = p.parse_args()
    made = json.dumps(census(a.repo), indent=1) + "\n"
    if a.check:
        same = OUT.read_text() == made
        print("census up to date" if same else "census stale: rerun scripts/spec_census.py")
        return 0 if same else 1
    OUT.write_text(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
