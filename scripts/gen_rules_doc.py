"""Write docs/rules.md from the rule catalogue and the requirement table (`nbdscope rules ID` for every rule).

Run after changing a rule, a check or a requirement row: `.venv/bin/python scripts/gen_rules_doc.py`.
`--check` exits 1 (changing nothing) when the file is stale; a unit test does the same."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbdscope.report.ruledoc import document

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def main(argv: list[str]) -> int:
    text = document()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is stale: run scripts/gen_rules_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
