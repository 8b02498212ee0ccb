"""option-protocol against real peers on loopback: a real client made to break a handshake rule, a
real server whose permitted behaviour must stay silent, and a real client against a tiny scripted
server that breaks one rule (what no real server can be made to do).

Requirement rows: opt-set-meta-context.4 (queries start with a namespace), rep-info.2 (one
NBD_INFO type per answer), and the LIST_META_CONTEXT ids that bind nothing (opt-list-meta-context.12:
qemu-nbd sends 0 for each)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import threading
from pathlib import Path

import pytest

from tests.judging import fired
from tests.live import SYSTEM_PYTHON, free_port, nbdsh, process, run, tcpdump
from tests.oracles import report

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "qemu-nbd", "nbdinfo", "tcpdump"))
                                 or os.geteuid() != 0, reason="needs nbdkit, qemu-nbd, nbdinfo, tcpdump and root")]

REP_MAGIC = 0x3E889045565A9
GO, ABORT, ACK, REP_INFO = 7, 2, 1, 3


def _findings(cap: Path) -> list[dict]:
    return report(cap)["anomalies"]


def _checks(findings: list[dict]) -> set[str]:
    return {a.get("check") or a["rule"] for a in findings}


class _Found:
    """A report's findings in the shape tests/judging.fired reads (check, requirements, blame)."""

    def __init__(self, a: dict) -> None:
        self.check, self.blame, self.message = a.get("check", ""), a["blame"], a["message"]
        self.requirements, self.severity = tuple(a.get("requirements", ())), a["severity"]


def test_libnbd_query_without_namespace_against_nbdkit(tmp_path: Path) -> None:
    """opt-set-meta-context.4: libnbd 1.14 sends add_meta_context('allocation') as it is."""
    port, cap = free_port(), tmp_path / "q.pcap"
    with process(["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "memory", "1M"], port=port), tcpdump(cap, port):
        script = f"h.add_meta_context('allocation'); h.connect_uri('nbd://127.0.0.1:{port}'); h.shutdown()"
        run([SYSTEM_PYTHON, "-m", "nbd", "-c", script])  # no -u: the context is added before connecting
    found = [_Found(a) for a in _findings(cap)]
    [hit] = fired(found, "option-protocol.set-query-without-namespace", blame="client")  # type: ignore[arg-type]
    assert "'allocation'" in hit.message
    assert {f.check for f in found} == {"option-protocol.set-query-without-namespace"}


def test_qemu_nbd_lists_contexts_with_id_zero_silently(tmp_path: Path) -> None:
    """opt-list-meta-context.12/.13: qemu-nbd answers NBD_OPT_LIST_META_CONTEXT with several contexts, each id 0;
    ids bind only for SET_META_CONTEXT, so nothing is flagged."""
    port, cap = free_port(), tmp_path / "l.pcap"
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(1 << 20))
    server = ["qemu-nbd", "-t", "-f", "raw", "-A", "-b", "127.0.0.1", "-p", str(port), str(disk)]
    with process(server, port=port), tcpdump(cap, port):
        out = run(["nbdinfo", "--list", f"nbd://127.0.0.1:{port}"])
    assert "base:allocation" in out and "qemu:allocation-depth" in out
    findings = _findings(cap)
    assert not [a for a in findings if a["rule"] == "option-protocol"], findings


def _duplicate_info_server(port: int, ready: threading.Event) -> None:
    """One session: fixed newstyle, every option but GO and ABORT unsupported, GO answered with
    NBD_INFO_EXPORT twice (rep-info.2), then requests answered until NBD_CMD_DISC."""
    size, tflags = 1 << 20, 0x1 | 0x4
    with socket.create_server(("127.0.0.1", port)) as srv:
        ready.set()
        srv.settimeout(10)
        conn, _ = srv.accept()
        with conn:
            f = conn.makefile("rwb")
            f.write(b"NBDMAGIC" + b"IHAVEOPT" + struct.pack(">H", 3))
            f.flush()
            f.read(4)

            def reply(opt: int, rep: int, data: bytes = b"") -> None:
                f.write(struct.pack(">QIII", REP_MAGIC, opt, rep, len(data)) + data)

            while True:
                _, opt, length = struct.unpack(">8sII", f.read(16))
                f.read(length)
                if opt == GO:
                    export = struct.pack(">HQH", 0, size, tflags)
                    reply(GO, REP_INFO, export)
                    reply(GO, REP_INFO, export)
                    reply(GO, ACK)
                    f.flush()
                    break
                reply(opt, ACK if opt == ABORT else (1 << 31) | 1)
                f.flush()
                if opt == ABORT:
                    return
            while head := f.read(28):
                _, _, cmd, cookie, _, length = struct.unpack(">IHHQQI", head)
                f.write(struct.pack(">IIQ", 0x67446698, 0, cookie) + (bytes(length) if cmd == 0 else b""))
                f.flush()
                if cmd == 2:
                    return


def test_libnbd_against_a_server_that_repeats_export_info(tmp_path: Path) -> None:
    """rep-info.2: one NBD_INFO type per GO answer (a SHOULD: a warning on the server, nothing on libnbd)."""
    port, cap = free_port(), tmp_path / "d.pcap"
    ready = threading.Event()
    server = threading.Thread(target=_duplicate_info_server, args=(port, ready), daemon=True)
    server.start()
    ready.wait(5)
    with tcpdump(cap, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", "h.pread(512, 0); h.shutdown()"))
    server.join(10)
    found = [_Found(a) for a in _findings(cap)]
    [hit] = fired(found, "option-protocol.duplicate-info-reply", blame="server")  # type: ignore[arg-type]
    assert hit.severity == "warning"
    assert not [f for f in found if f.check.startswith("option-protocol.") and f.check != hit.check]
