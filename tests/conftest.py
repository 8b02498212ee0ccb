"""What the whole suite shares.

Fixtures live here; helpers that tests call as functions live in helper modules (tests/nbdwire.py
encodes messages, tests/wirescripts.py builds conversations and decodes them, tests/oracles.py and
tests/wireshark.py ask independent tools, tests/live.py runs real peers, tests/pcapbuild.py writes
captures). A test module never imports another test module: tests/unit/test_suite_layout.py fails
the run if one does, because a test module imported elsewhere runs its tests twice and ties two
test files' fates together."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.oracles import CAPTURES


@pytest.fixture(scope="session")
def captures() -> Path:
    """The shipped captures (captures/README.md says what each one holds)."""
    return CAPTURES
