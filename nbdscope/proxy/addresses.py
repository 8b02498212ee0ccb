"""ADDR as the command line spells it: HOST:PORT, [IPV6]:PORT, :PORT or unix:/path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    host: str | None  # None for unix sockets
    port: int | None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def tcp(self) -> tuple[str, int]:
        """Host and port, for a TCP address (the caller has checked ``is_unix``)."""
        assert self.host is not None and self.port is not None, f"{self} is not a TCP address"
        return self.host, self.port

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if self.host and ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, default_host: str = "127.0.0.1") -> Address:
    """Parse ADDR; raises ValueError with a message fit for the user."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"{text!r}: unix: needs a path")
        return Address(None, None, path)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected HOST:PORT, [IPV6]:PORT, :PORT or unix:/path")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: bad port {port!r}")
    return Address(host or default_host, int(port))
