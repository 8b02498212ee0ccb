#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: system packages, a
# virtualenv with the project and its test tools, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k decoder).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .  # lint, import order and C901 complexity (settings in pyproject.toml)
.venv/bin/mypy nbdscope  # types ([tool.mypy] in pyproject.toml); must pass like the tests
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
# pytest's "no tests collected" must not pass silently
[ "$rc" -eq 5 ] && { echo "no tests ran" >&2; exit 1; }
exit "$rc"
