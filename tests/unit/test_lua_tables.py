"""The plugin's constants are generated from nbdscope/spec; the committed file must be current."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbdscope.report import lua_tables
from nbdscope.spec import TRANSMISSION_FLAGS, Cmd
from nbdscope.spec.tables import Bit


def test_committed_plugin_matches_the_spec() -> None:
    text = lua_tables.DEFAULT_PLUGIN.read_text(encoding="utf-8")
    assert lua_tables.splice(text, lua_tables.generate()) == text, \
        "dissectors/nbdscope.lua is stale: run python -m nbdscope.report.lua_tables"
    assert lua_tables.main(["--check"]) == 0


def test_check_fails_on_a_spec_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "nbdscope.lua"
    copy.write_text(lua_tables.DEFAULT_PLUGIN.read_text(encoding="utf-8"), encoding="utf-8")
    assert lua_tables.main([str(copy), "--check"]) == 0
    renamed = tuple(Bit(b.number, b.name + "_X", b.meaning, b.section) if b.number == 10 else b
                    for b in TRANSMISSION_FLAGS.bits)
    monkeypatch.setattr(TRANSMISSION_FLAGS, "bits", renamed)
    assert lua_tables.main([str(copy), "--check"]) == 1
    assert lua_tables.main([str(copy)]) == 0  # regenerating fixes it
    assert "NBD_FLAG_SEND_CACHE_X" in copy.read_text(encoding="utf-8")


def test_generated_block_carries_every_constant_the_plugin_uses() -> None:
    block = lua_tables.generate()
    assert "S.CMD = { READ = 0" in block and f"CACHE = {int(Cmd.CACHE)}" in block
    assert '[10] = {"NBD_OPT_SET_META_CONTEXT"' in block
    assert 'name = "NBD_FLAG_CAN_MULTI_CONN"' in block and "mask = 0x100" in block
    assert '["cache-flag-mismatch"] = { severity = "warning"' in block
    hand_written = lua_tables.DEFAULT_PLUGIN.read_text(encoding="utf-8").split(lua_tables.END, 1)[1]
    for magic in ("25609513", "67446698", "668E33EF", "4E42444D", "10809"):  # no constant spelled by hand
        assert magic.lower() not in hand_written.lower()


def test_missing_markers_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.lua"
    bad.write_text("-- nothing here\n")
    assert lua_tables.main([str(bad)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
