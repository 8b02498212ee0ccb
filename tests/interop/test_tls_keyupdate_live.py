"""KeyUpdate with a real peer: OpenSSL's s_client sends one on its "k" and "K" commands (K also asks the server
to update its own keys). Its key log names only the first application secrets that matter here, so every
later secret is derived by nbdscope (RFC 8446 7.2); the records after each update must open. GnuTLS, which the
NBD peers use, cannot be made to send a KeyUpdate from the command line, and NBD is not needed for this: the
decryptor sees the TLS bytes after STARTTLS alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nbdscope import vocab as it
from nbdscope.capture import read_captures
from nbdscope.capture.processes import stop_process
from nbdscope.tls.keylog import KeyLog
from nbdscope.tls.session import Decryptor
from tests.live import free_port, tcpdump
from tests.tlspeers import make_pki

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(not all(shutil.which(t) for t in ("openssl", "certtool", "tcpdump"))
                                 or os.geteuid() != 0, reason="needs openssl, certtool, tcpdump and root")]


def test_key_updates_from_openssl_are_followed(tmp_path: Path) -> None:
    pki, keylog, cap, port = make_pki(tmp_path / "pki"), tmp_path / "keys.log", tmp_path / "ku.pcap", free_port()
    with tcpdump(cap, port):
        server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3", "-cert",
                                   str(pki / "server-cert.pem"), "-key", str(pki / "server-key.pem")],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            client = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                                       "-keylogfile", str(keylog)], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                assert client.stdin is not None and server.stdin is not None
                time.sleep(0.5)
                for line in (b"before\n", b"K\n", b"after-K\n", b"k\n", b"after-k\n"):
                    client.stdin.write(line)
                    client.stdin.flush()
                    time.sleep(0.3)
                server.stdin.write(b"server-after-K\n")
                server.stdin.flush()
                time.sleep(0.3)
            finally:
                stop_process(client)
        finally:
            stop_process(server)
    decryptor = Decryptor(KeyLog(str(keylog)))
    plain: list[tuple[str, bytes]] = []
    for item in read_captures([str(cap)], extra_ports=[port]):
        if isinstance(item, it.StreamData):
            plain += [(d, p) for d, p, _, _ in decryptor.feed(item.dir, bytes(item.data), item.frame, item.time)]
    assert decryptor.status == "decrypted", decryptor.reason
    assert plain == [("c2s", b"before\n"), ("c2s", b"after-K\n"), ("c2s", b"after-k\n"), ("s2c", b"server-after-K\n")]
