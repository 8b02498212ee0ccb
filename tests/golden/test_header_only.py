"""Header-only captures (issue 15): every shipped capture cut by ``editcap -s`` at 96, 128 and 200
bytes a packet must decode every request whose header the cut capture still holds, with the same
command, cookie, offset and length as the whole capture, and must blame no peer for what the
snapshot length took.

Which headers survive is worked out independently of the decoder under test: from where each
payload chunk of the whole capture lies in its frame (the reassembly's trace), a header survives
when all of its bytes lie within the first N bytes of the frames that carry them."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from nbdscope import pipeline
from nbdscope.analysis.addons import Addon
from nbdscope.analysis.session import Session
from nbdscope.capture.tcp import Origin
from nbdscope.decoder import events as ev
from tests.cuts import covers
from tests.oracles import CAPTURES

# (not the TLS captures: a record the snapshot length cut cannot be authenticated, so nothing after
# STARTTLS has headers to keep)
ALL = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng") and not p.stem.startswith("tls"))
SNAPS = (96, 128, 200)

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (wireshark-common)")

Key = tuple[str, int, int, int, int]  # session, cookie, command, offset, length


class _Requests(Addon):
    def __init__(self) -> None:
        self.found: list[tuple[Key, str, int, int]] = []  # key, direction, header start, header end

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return issubclass(event_type, ev.Request)

    def message(self, session: Session, event: ev.Event) -> None:
        assert isinstance(event, ev.Request)
        key = (session.id, event.cookie, event.command, event.offset, event.length)
        self.found.append((key, session.id, event.start, event.start + (32 if event.extended else 28)))


def _decode(path: Path, trace: list[Origin] | None = None) -> tuple[list, list]:
    requests = _Requests()
    result = pipeline.run(pipeline.FileSource([str(path)], trace=trace), [requests])
    return requests.found, result.anomalies


def _kept(trace: list[Origin], snap: int, sessions: dict[int, str]) -> dict[str, list[tuple[int, int]]]:
    """Stream ranges of client bytes that the first ``snap`` bytes of their frames hold, per session."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for o in trace:
        if o.offset < 0 or o.dir != "c2s" or o.conn not in sessions:
            continue
        keep = max(0, min(o.length, snap - o.pos))
        if keep:
            ranges.setdefault(sessions[o.conn], []).append((o.offset, o.offset + keep))
    return ranges


# Cuts so short that the link, IP and TCP headers leave fewer payload bytes a packet than a request header
# (28): nothing can be checked against the whole capture's requests, only that no peer is blamed
# (IPv6 over Ethernet keeps 10 bytes at 96, Linux cooked capture v2 keeps 24).
NOTHING_FITS = {("ipv6.pcapng", 96), ("linux-cooked-any.pcap", 96)}


@pytest.mark.parametrize("snap", SNAPS)
@pytest.mark.parametrize("capture", ALL, ids=lambda p: p.name)
def test_cut_capture_keeps_every_header_that_fits(capture: Path, snap: int, tmp_path: Path) -> None:
    trace: list[Origin] = []
    whole, expected = _decode(capture, trace)
    sessions = {n: f"s{n + 1}" for n in {o.conn for o in trace}}  # conn ids are numbered like sessions
    kept = _kept(trace, snap, sessions)
    cut = tmp_path / f"cut{snap}.pcap"
    subprocess.run(["editcap", "-s", str(snap), str(capture), str(cut)], check=True, capture_output=True)
    got, findings = _decode(cut)
    fitting = Counter(key for key, sid, start, end in whole if covers(kept.get(sid, []), start, end))
    decoded = Counter(key for key, *_ in got)
    if (capture.name, snap) in NOTHING_FITS:
        assert not fitting, "a request header fits after all: check this case like the others"
    else:
        assert fitting, "no request header fits: the test would prove nothing"
    assert fitting - decoded == Counter(), "requests whose headers were captured but not decoded"
    assert decoded - Counter(key for key, *_ in whole) == Counter(), "requests the whole capture does not have"
    already = {(a.rule, a.blame, a.session) for a in expected}  # what the scenario holds on purpose
    blamed = [(a.rule, a.blame, a.session, a.message) for a in findings
              if a.blame in ("client", "server") and a.severity in ("error", "warning")
              and (a.rule, a.blame, a.session) not in already]
    assert blamed == [], "a peer blamed for what the snapshot length cut"


def test_header_only_loss_is_one_capture_note_per_session(tmp_path: Path) -> None:
    """capture-gap.header-only: what the snapshot length cut is reported once per session, blamed on the
    capture, and adds up (with the headers it cut, reported as lost bytes) to the payload bytes beyond the
    snapshot length in the whole capture's frames."""
    from tests.judging import fired

    capture, snap = CAPTURES / "nbdcopy-4conn-nbdkit-memory.pcap", 128
    trace: list[Origin] = []
    _decode(capture, trace)
    cut_bytes = sum(o.length - max(0, min(o.length, snap - o.pos)) for o in trace if o.offset >= 0)
    cut = tmp_path / "cut.pcap"
    subprocess.run(["editcap", "-s", str(snap), str(capture), str(cut)], check=True, capture_output=True)
    _, findings = _decode(cut)
    notes = fired(findings, "capture-gap.header-only", blame="capture")
    assert len({a.session for a in notes}) == len(notes) and {a.severity for a in notes} == {"info"}
    lost = [a for a in findings if a.check == "capture-gap.lost-bytes"]
    assert sum(a.values["nbytes"] for a in notes + lost) == cut_bytes > 0
