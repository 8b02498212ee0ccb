"""The rule catalog."""

from __future__ import annotations

from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.framing import CaptureGap, ChunkFraming, HardDisconnect, MalformedMessage, OptionFraming

ALL_RULES: tuple[type[Rule], ...] = (
    CaptureGap, MalformedMessage, OptionFraming, ChunkFraming, HardDisconnect,
)

__all__ = ["ALL_RULES", "Rule"]
