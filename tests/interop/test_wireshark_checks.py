"""The plugin's expert infos name what analyze's findings name (the check when the finding has one)
and carry the same severity: one severity per check, in Wireshark too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.oracles import CAPTURES
from tests.wireshark import TSHARK, analyze_records, expert_infos, plugin_messages

pytestmark = [pytest.mark.interop, pytest.mark.skipif(TSHARK is None, reason="needs tshark (Debian package tshark)")]
PCAPS = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: p.name)
def test_plugin_experts_name_the_check_at_analyze_severity(capture: Path) -> None:
    findings = [a for a in analyze_records(capture) if a["type"] == "ANOMALY"]
    for m in plugin_messages(capture):
        for ident, severity in expert_infos(m["fields"]):
            near = [a for a in findings if a["frame"] <= m["frame"] <= a["frame"] + 64
                    and (a.get("check") or a["rule"]) == ident]
            assert near, f"{capture.name} frame {m['frame']}: the plugin's {ident} names no finding of analyze there"
            assert severity in {a["severity"] for a in near}, \
                f"{capture.name} frame {m['frame']}: the plugin files {ident} under {severity}, analyze under " \
                f"{sorted({a['severity'] for a in near})}"
