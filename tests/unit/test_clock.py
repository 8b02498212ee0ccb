"""The three ways a view writes a moment (``--time``), against datetime's own ISO 8601 and plain arithmetic."""

from __future__ import annotations

import pytest

from nbdscope.report.clock import Clock, iso8601

EPOCH = 1795362414.158889  # 2026-11-22T15:46:54.158889Z (date -u -d @1795362414)


def test_relative_counts_from_the_origin() -> None:
    c = Clock("rel", origin=EPOCH)
    assert c.text(EPOCH + 0.044919) == "0.044919"
    assert c.relative(EPOCH + 2.5) == pytest.approx(2.5)


def test_absolute_is_iso8601_with_the_zone_as_an_offset() -> None:
    assert iso8601(EPOCH, 0) == "2026-11-22T15:46:54.158889+00:00"
    assert iso8601(EPOCH, 3600) == "2026-11-22T16:46:54.158889+01:00"
    assert iso8601(EPOCH, -5 * 3600 - 1800) == "2026-11-22T10:16:54.158889-05:30"
    assert Clock("abs", origin=0.0, utc_offset=0).text(EPOCH) == "2026-11-22T15:46:54.158889+00:00"
    assert len(Clock("abs").text(EPOCH)) == Clock("abs").width


def test_absolute_without_a_recorded_zone_uses_the_local_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert Clock("abs").text(EPOCH) == "2026-11-22T21:16:54.158889+05:30"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_delta_is_since_the_line_shown_before() -> None:
    c = Clock("delta", origin=EPOCH)
    assert c.text(EPOCH + 1.0) == "+1.000000"
    assert c.text(EPOCH + 1.25) == "+0.250000"
    assert c.text(EPOCH + 1.25) == "+0.000000"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time mode"):
        Clock("wall")
