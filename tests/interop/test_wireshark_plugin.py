"""The Lua plugin (dissectors/nbdscope.lua) in Debian's tshark against `nbdscope
analyze`: two independent decoders of the same captures must agree on every
message, and the plugin's expert infos must name the seed anomalies with the
rule ids of `nbdscope rules`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.oracles import CAPTURES
from tests.wireshark import (
    NOT_ON_WIRE,
    PLUGIN,
    TSHARK,
    analyze_key,
    analyze_records,
    analyze_sessions,
    plugin_key,
    plugin_messages,
    tshark,
)

pytestmark = pytest.mark.skipif(TSHARK is None, reason="needs tshark (Debian package tshark)")
PCAPS = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


def _by_session(capture: Path) -> tuple[dict[int, list[tuple]], dict[int, list[tuple]]]:
    ports = analyze_sessions(capture)
    ours: dict[int, list[tuple]] = defaultdict(list)
    for r in analyze_records(capture):
        if r["type"] not in NOT_ON_WIRE:
            ours[ports[r["session"]]].append((r["dir"], *analyze_key(r)))
    theirs: dict[int, list[tuple]] = defaultdict(list)
    for m in plugin_messages(capture):
        if m["fields"]["nbdscope.msgtype"] != "TLS_DATA":
            theirs[m["client_port"]].append((m["dir"], *plugin_key(m["fields"])))
    assert len(set(ports.values())) == len(ports), "client ports must tell sessions apart"
    return ours, theirs


@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: p.name)
def test_plugin_agrees_with_analyze_on_every_message(capture: Path) -> None:
    ours, theirs = _by_session(capture)
    assert set(theirs) == set(ours), f"sessions differ: analyze {sorted(ours)}, plugin {sorted(theirs)}"
    total = 0
    for port, messages in ours.items():
        # per direction, in order: the two sides' interleaving inside one frame may differ
        for d in ("c2s", "s2c"):
            a = [m for m in messages if m[0] == d]
            b = [m for m in theirs[port] if m[0] == d]
            for i, (x, y) in enumerate(zip(a, b, strict=False)):
                assert x == y, f"{capture.name} client port {port} {d} message {i}: analyze {x} != plugin {y}"
            assert len(a) == len(b), f"{capture.name} client port {port} {d}: analyze {len(a)} messages, plugin {len(b)}"
            total += len(a)
    assert total > 0
    print(f"{capture.name}: {total} messages agree")


# findings that need the whole capture (several connections, or how a connection ended), which a
# dissector seeing one PDU at a time cannot make; everything else analyze finds, the plugin must too
WHOLE_CAPTURE = {"multi-conn-without-flag", "hard-disconnect", "capture-gap", "stale-read", "handshake-outcome",
                 "proxy-action"}


def _whole_capture(anomaly: dict) -> bool:
    return anomaly["rule"] in WHOLE_CAPTURE or "sessions" in anomaly.get("values", {})


@pytest.mark.parametrize("capture", PCAPS, ids=lambda p: p.name)
def test_plugin_expert_infos_match_analyze_findings(capture: Path) -> None:
    """Same rule ids, no more and no fewer, each at the analyze frame or the frame that completes the
    PDU (tshark shows a message where its last segment arrives, analyze where its header does)."""
    found = sorted((rule, m["frame"]) for m in plugin_messages(capture) for rule in m["experts"])
    wanted = sorted((a["rule"], a["frame"]) for a in analyze_records(capture)
                    if a["type"] == "ANOMALY" and not _whole_capture(a))
    unmatched = list(found)
    for rule, frame in wanted:
        hit = next((f for f in unmatched if f[0] == rule and frame <= f[1] <= frame + 64), None)
        assert hit, f"{capture.name}: analyze found {rule} at frame {frame}, the plugin did not: {found}"
        unmatched.remove(hit)
    assert not unmatched, f"{capture.name}: plugin expert infos analyze does not have: {unmatched}"


# the expert names the check analyze reports (rule.check), so a filter on the check finds it
SEEDS = {"seed-cache-flag.pcap": ("cache-flag-mismatch.cache-unadvertised", "Warning", 17,
                                  "NBD_FLAG_SEND_CACHE (bit 10)"),
         # the server's side of this seed needs several writing connections, which only analyze sees
         "seed-cache-flag-server.pcap": ("cache-flag-mismatch.cache-unadvertised", "Warning", 17,
                                         "NBD_FLAG_SEND_CACHE (bit 10)"),
         "seed-unaligned-extent.pcap": ("unaligned-extent.length", "Warning", 27, "minimum block size 512")}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_capture_verbose_shows_handshake_flag_bits_and_expert(name: str) -> None:
    """What the issue asks a user to see with `tshark -V`: the handshake, flags bit by bit, the finding."""
    rule, severity, frame, words = SEEDS[name]
    text = tshark("-r", str(CAPTURES / name), "-V", "-O", "nbdscope")
    for expected in ("NEWSTYLE_GREETING", "bit 0 NBD_FLAG_FIXED_NEWSTYLE: Set", "NBD_OPT_GO",
                     "bit 8 NBD_FLAG_CAN_MULTI_CONN", "bit 10 NBD_FLAG_SEND_CACHE: Not set" if "cache" in name
                     else "Minimum block size: 512", f"Expert Info ({severity}/Protocol): {rule}: ", words):
        assert expected in text, f"{name}: {expected!r} missing from tshark -V"
    # the expert is on the right frame, and display filters reach it
    frames = tshark("-r", str(CAPTURES / name), "-Y", f'_ws.expert.message contains "{rule}:"',
                    "-T", "fields", "-e", "frame.number").split()
    assert str(frame) in frames
    assert tshark("-r", str(CAPTURES / name), "-Y", "nbdscope.cmd == 5", "-T", "fields", "-e", "nbdscope.cmd").split() \
        == (["5"] if "cache" in name else [])


def test_plugin_takes_precedence_over_the_builtin_nbd_dissector() -> None:
    """No configuration needed in tshark 4.0: with the plugin loaded the built-in `nbd` dissector
    decodes nothing, and --disable-protocol nbdscope gives it back (what docs/PLUGIN.md says)."""
    for capture in PCAPS:
        assert tshark("-r", str(capture), "-Y", "nbd") == "", capture.name
    back = tshark("-r", str(CAPTURES / "oldstyle-nbdkit.pcap"), "--disable-protocol", "nbdscope", "-Y", "nbd")
    assert len(back.splitlines()) > 0


def test_installed_by_one_copy_into_the_personal_plugins_folder(tmp_path: Path) -> None:
    """docs/PLUGIN.md's install line: copy the one file, nothing else (no -X option)."""
    import os
    import shutil
    import subprocess

    plugins = tmp_path / ".local" / "lib" / "wireshark" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(PLUGIN, plugins)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    listed = subprocess.run([TSHARK, "-G", "plugins"], capture_output=True, text=True, env=env, check=True).stdout
    assert str(plugins / "nbdscope.lua") in listed
    out = subprocess.run([TSHARK, "-n", "-r", str(CAPTURES / "seed-cache-flag.pcap"), "-Y", "nbdscope.cmd == 5"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "CMD_CACHE cookie=0x1" in out
