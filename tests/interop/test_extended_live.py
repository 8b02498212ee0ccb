"""Extended headers against a real server: nbdkit 1.32 (Debian 12) predates them and refuses
NBD_OPT_EXTENDED_HEADERS. A hand-driven client asks for them, is refused and carries on with compact
headers: nbdkit is not blamed for anything; a client that sends an extended request anyway is
(ext.opt-extended-headers.10). No Debian 12 client negotiates extended headers, hence the raw socket."""

from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path

import pytest

from nbdscope.analysis.anomaly import Anomaly
from tests import nbdwire as w
from tests.judging import fired
from tests.live import free_port, process, tcpdump
from tests.nbdwire import recv_exactly
from tests.oracles import report

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("nbdkit", "tcpdump")) or os.geteuid() != 0,
                                 reason="needs nbdkit, tcpdump and root")]

ERR_UNSUP = (1 << 31) + 1




def _option_replies(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Option replies up to and including the final one (ACK or an error)."""
    replies = []
    while True:
        _magic, _opt, rep, length = struct.unpack(">QIII", recv_exactly(sock, 20))
        replies.append((rep, recv_exactly(sock, length)))
        if rep == 1 or rep & (1 << 31):
            return replies


def _session(port: int, extended_after_refusal: bool) -> int:
    """Ask for extended headers, then structured replies, GO, one compact read; returns the refusal."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        recv_exactly(sock, 18)
        sock.sendall(w.client_flags())
        sock.sendall(w.option(11))
        [(refusal, _)] = _option_replies(sock)
        sock.sendall(w.option(8))
        _option_replies(sock)
        sock.sendall(w.option(7, w.opt_go_data("")))
        _option_replies(sock)
        sock.sendall(w.request(0, 1, 0, 512))
        *_, length = struct.unpack(">IHHQI", recv_exactly(sock, 20))
        recv_exactly(sock, length)
        if extended_after_refusal:
            sock.sendall(w.ext_request(3, 2, 0, 0))  # NBD_CMD_FLUSH in the 32-byte form nbdkit did not agree to
            sock.settimeout(2)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
        else:
            sock.sendall(w.request(2, 3, 0, 0))
    return refusal


@pytest.mark.parametrize("misbehave", [False, True], ids=["compact-after-refusal", "extended-after-refusal"])
def test_nbdkit_refuses_extended_headers(tmp_path: Path, misbehave: bool) -> None:
    port, cap = free_port(), tmp_path / "ext.pcap"
    server = ["nbdkit", "-f", "-p", str(port), "-i", "127.0.0.1", "memory", "1M"]
    with process(server, port=port), tcpdump(cap, port):
        refusal = _session(port, misbehave)
    assert refusal == ERR_UNSUP  # nbdkit 1.32 does not know the option
    rep = report(cap)
    [session] = rep["sessions"]
    assert session["extended_headers"] is False
    ours = [a for a in rep["anomalies"] if a["rule"] in ("extended-headers", "extended-negotiation")]
    if not misbehave:
        assert ours == [], ours
        return
    assert [a["check"] for a in ours] == ["extended-headers.extended-request-refused"], ours
    assert all(a["blame"] == "client" for a in ours)
    assert fired(_anomalies(rep), "extended-headers.extended-request-refused", blame="client")


def _anomalies(rep: dict) -> list:
    """The JSON findings as the Anomaly objects ``fired`` reads."""
    return [Anomaly(rule=a["rule"], severity=a["severity"], blame=a["blame"], session=a["session"], frame=a["frame"],
                    time=a["time"], message=a["message"], spec=a["spec"], check=a.get("check", ""),
                    requirements=tuple(a.get("requirements", ()))) for a in rep["anomalies"]]
