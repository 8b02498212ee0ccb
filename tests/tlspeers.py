"""Helpers for the TLS live tests: certificates made by certtool, in the layout nbdkit, libnbd and qemu read."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_pki(d: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 / localhost, in the layout nbdkit, libnbd and qemu read."""
    d.mkdir()
    (d / "ca.info").write_text("cn = nbdscope test CA\nca\ncert_signing_key\nexpiration_days = 2\n")
    (d / "server.info").write_text("organization = nbdscope test\ncn = localhost\ndns_name = localhost\n"
                                   "ip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n"
                                   "expiration_days = 2\n")
    for cmd in (["--generate-privkey", "--outfile", "ca-key.pem"],
                ["--generate-self-signed", "--load-privkey", "ca-key.pem", "--template", "ca.info",
                 "--outfile", "ca-cert.pem"],
                ["--generate-privkey", "--outfile", "server-key.pem"],
                ["--generate-certificate", "--load-ca-certificate", "ca-cert.pem", "--load-ca-privkey", "ca-key.pem",
                 "--load-privkey", "server-key.pem", "--template", "server.info", "--outfile", "server-cert.pem"]):
        subprocess.run(["certtool", *cmd], cwd=d, capture_output=True, check=True, timeout=30)
    return d
