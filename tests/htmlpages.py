"""Captures and pages for the HTML report's tests: a small capture whose export name is hostile markup,
with an error reply and a finding in it, and readers for what the page embeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nbdscope.cli import main
from tests import nbdwire as w
from tests import pcapbuild as pb

HOSTILE = '</script><script>alert("x")</script><img src=x onerror=alert(1)> $\\frac{a}{b}$ &amp;'
"""An export name a peer might send: markup that must stay text, and mathtext that matplotlib must not see."""
READ, WRITE, TRIM, ZEROES, FLUSH = 0, 1, 4, 6, 3


def hostile_capture(path: Path) -> Path:
    """One session to export HOSTILE: writes, reads (one unaligned to the advertised 512 bytes: a finding),
    a trim answered with EINVAL, write-zeroes and a flush, then NBD_CMD_DISC."""
    f = pb.Flow(client="127.0.0.1", server="127.0.0.1", cport=40123, sport=10809)
    msgs: list[tuple[str, bytes]] = [
        ("s2c", w.greeting_newstyle()), ("c2s", w.client_flags()),
        ("c2s", w.option(7, w.opt_go_data(HOSTILE, (3,)))),
        ("s2c", w.opt_reply(7, 3, w.info_export(64 << 20, 0x16D))),
        ("s2c", w.opt_reply(7, 3, w.info_block_size(512, 4096, 1 << 25))), ("s2c", w.opt_reply(7, 1)),
    ]
    for i in range(8):
        msgs += [("c2s", w.request(WRITE, 10 + i, i << 20, 65536, data=b"w" * 65536)), ("s2c", w.simple_reply(10 + i))]
        msgs += [("c2s", w.request(READ, 30 + i, (i << 20) + 4096, 4096)), ("s2c", w.simple_reply(30 + i, 0, b"r" * 4096))]
    msgs += [("c2s", w.request(READ, 50, 100, 100)), ("s2c", w.simple_reply(50, 0, b"u" * 100)),
             ("c2s", w.request(TRIM, 51, 1 << 20, 8192)), ("s2c", w.simple_reply(51, 22)),
             ("c2s", w.request(ZEROES, 52, 32 << 20, 1 << 20)), ("s2c", w.simple_reply(52)),
             ("c2s", w.request(FLUSH, 53, 0, 0)), ("s2c", w.simple_reply(53)),
             ("c2s", w.request(2, 54, 0, 0))]
    packets = [(1_700_000_000.0 + i * 0.001, pb.frame(1, ip)) for i, ip in enumerate(f.syn())]
    t = 1_700_000_000.01
    for direction, data in msgs:
        t += 0.0005
        for at in range(0, len(data), 8192):  # segments an IP packet can hold
            part = data[at:at + 8192]
            packets.append((t, pb.frame(1, f.c2s(part) if direction == "c2s" else f.s2c(part))))
    for ip in f.fin():
        t += 0.001
        packets.append((t, pb.frame(1, ip)))
    pb.write_pcap(str(path), packets)
    return path


def write_page(capture: Path, out: Path) -> str:
    assert main(["analyze", str(capture), "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def plot_data(page: str) -> dict[str, object]:
    """The JSON the page embeds for its plots."""
    m = re.search(r'<script type="application/json" id="nbdscope-plot-data">(.*?)</script>', page, re.S)
    assert m, "no plot data in the page"
    data: dict[str, object] = json.loads(m.group(1))
    return data
