"""Live interop: real clients against nbdkit on loopback while tcpdump records;
every request nbdkit's log filter saw must come out of nbdscope decoded the same
(command, offset, length, flags), and the export nbdscope reports must match the
Connect line nbdkit logged."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.live import free_port, nbdsh, process, run, tcpdump
from tests.oracles import jsonl, messages, nbdkit_log, report

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump", "nbdcopy", "qemu-img"))
                                 or os.geteuid() != 0, reason="needs nbdkit, libnbd tools, qemu-img and root")]

NBDSH_SCRIPT = """
h.pwrite(b'a' * 65536, 0)
h.pwrite(b'b' * 4096, 1 << 20, nbd.CMD_FLAG_FUA)
h.pread(8192, 4096)
h.flush()
h.trim(65536, 2 << 20)
h.zero(4096, 3 << 20, nbd.CMD_FLAG_NO_HOLE)
h.zero(8192, 3 << 20, nbd.CMD_FLAG_FAST_ZERO)
h.cache(4096, 0)
h.block_status(1 << 20, 0, lambda *a: 0)
h.block_status(1 << 20, 0, lambda *a: 0, nbd.CMD_FLAG_REQ_ONE)
buf = nbd.Buffer(512)
c = [h.aio_pread(buf, i * 512) for i in range(16)]
while h.aio_in_flight() > 0:
    h.poll(-1)
h.shutdown()
"""


def test_every_logged_request_is_decoded(tmp_path: Path) -> None:
    port = free_port()
    log, cap = tmp_path / "nbdkit.log", tmp_path / "live.pcap"
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(512 << 10))
    uri = f"nbd://127.0.0.1:{port}"
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "--filter=log", "memory", "4M", f"logfile={log}"]
    with process(server, port=port), tcpdump(cap, port):
        run(nbdsh(uri, NBDSH_SCRIPT, base_allocation=True))
        run(["nbdcopy", "--connections=4", "--threads=4", "--request-size=65536", str(src), uri])
        run(["nbdcopy", "--connections=2", "--threads=2", uri, str(tmp_path / "back.bin")])
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), uri])
        run(["nbdinfo", "--map", uri])
    logged, connects = nbdkit_log(log)
    assert sum(len(v) for v in logged.values()) >= 40

    records = messages(jsonl(cap))
    decoded: dict[str, list[tuple[str, int, int, frozenset[str]]]] = {}
    for r in records:
        if r["dir"] == "c2s" and r["type"].startswith("NBD_CMD_") and r["type"] != "NBD_CMD_DISC":
            flags = frozenset(b["name"] for b in r["flags"]["bits"] if b["set"])
            decoded.setdefault(r["session"], []).append((r["type"], r["offset"], r["length"], flags))
    # each nbdkit connection's requests are exactly one decoded session's requests (as multisets:
    # nbdkit's worker threads may log concurrent requests out of wire order)
    remaining = dict(decoded)
    for conn, requests in logged.items():
        want = Counter((q.command, q.offset, q.length, q.flags) for q in requests)
        match = next((s for s, got in remaining.items() if Counter(got) == want), None)
        assert match is not None, f"nbdkit connection {conn} ({sum(want.values())} requests) not decoded alike"
        del remaining[match]
    assert all(not reqs for reqs in remaining.values()), remaining

    rep = report(cap)
    sizes = {s["export"]["size"] for s in rep["sessions"] if s["export"]["size"] is not None}
    assert sizes == {int(c["size"], 16) for c in connects.values()} == {4 << 20}
    assert not [a for a in rep["anomalies"] if a["severity"] == "error"], rep["anomalies"]


def test_qemu_nbd_export_size_and_flags(tmp_path: Path) -> None:
    port = free_port()
    img, cap = tmp_path / "disk.qcow2", tmp_path / "qemu.pcap"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "3M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 512k 128k", str(img)])
    server = ["qemu-nbd", "-t", "-r", "-f", "qcow2", "-p", str(port), "-b", "127.0.0.1", str(img)]
    with process(server, port=port), tcpdump(cap, port):
        info = run(["qemu-img", "info", "--output=json", f"nbd://127.0.0.1:{port}"])
        nbdinfo = run(["nbdinfo", "--json", f"nbd://127.0.0.1:{port}"])

    size = json.loads(info)["virtual-size"]
    ninfo = json.loads(nbdinfo)["exports"][0]
    rep = report(cap)
    exports = [s["export"] for s in rep["sessions"] if s["export"]["size"] is not None]
    assert exports and all(e["size"] == size == ninfo["export-size"] for e in exports)
    # nbdinfo's own reading of the flags word agrees with ours
    for e in exports:
        assert ("NBD_FLAG_READ_ONLY" in e["flags"]) == ninfo["is_read_only"]
        assert ("NBD_FLAG_CAN_MULTI_CONN" in e["flags"]) == ninfo["can_multi_conn"]
        assert ("NBD_FLAG_SEND_FLUSH" in e["flags"]) == ninfo["can_flush"]
        assert ("NBD_FLAG_SEND_CACHE" in e["flags"]) == ninfo["can_cache"]
        assert ("NBD_FLAG_SEND_DF" in e["flags"]) == ninfo["can_df"]
