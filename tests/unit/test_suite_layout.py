"""The suite's own structure: test modules share code through helper modules and
tests/conftest.py, never by importing one another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_checker_sees_both_import_spellings(tmp_path: Path) -> None:
    """The checker itself sees both import spellings (and ignores a helper module)."""
    f = tmp_path / "x.py"
    f.write_text("import tests.unit.test_a\nfrom tests.fuzz import test_b\nfrom tests.wirescripts import run\n")
    found = {m for m in _imported_modules(f) if m.rsplit(".", 1)[-1].startswith("test_")}
    assert found == {"tests.unit.test_a", "tests.fuzz.test_b"}


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] == "tests" and parts[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(TESTS.parent)} imports {module}")
    assert not offenders, "move shared helpers to a helper module or a conftest fixture:\n" + "\n".join(offenders)
