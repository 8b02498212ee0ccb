"""The peers' key log (the NSS format that ``SSLKEYLOGFILE`` makes GnuTLS, OpenSSL and Python write):
one ``LABEL <client random> <secret>`` per line, both in hex, ``#`` comments.

A key log given for ``analyze`` is complete when the run starts; under ``live`` and the proxy the
client appends to it during each handshake, so ``growing`` re-reads what was added since the last look
(never more than once per ``RECHECK`` seconds while a session waits for its key). A line cut short at
the end is held until its newline comes (growing) or reported (complete). Nothing read here is ever
copied into an output: the secrets stay in this object.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MAX_BYTES = 64 << 20  # a key log larger than this is refused: each session adds a few hundred bytes
MAX_LINE = 1024  # labels are short, randoms 32 bytes, secrets at most 48: a longer line is not a key log's
RECHECK = 0.05  # seconds between looks at a growing key log while a session waits for a key
_RANDOM = 32


class KeyLogError(Exception):
    """The key log cannot be used at all (missing, unreadable, too large): one line for the user."""


class KeyLog:
    """Secrets by (label, client random), read from ``path``."""

    def __init__(self, path: str, *, growing: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.growing, self._clock = path, growing, clock
        self._secrets: dict[tuple[str, bytes], bytes] = {}
        self._randoms: set[bytes] = set()
        self._read = 0  # bytes of the file taken so far
        self._partial = b""  # a line whose newline has not come yet
        self._checked = -1.0
        self.bad_lines = 0
        self.first_bad: str | None = None  # what was wrong with the first bad line (never its contents)
        self.cut_last_line = False
        self._load()

    def __len__(self) -> int:
        return len(self._secrets)

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_BYTES:
                    raise KeyLogError(f"key log {self.path} is {size} bytes, more than the {MAX_BYTES} "
                                      "nbdscope reads")
                if size < self._read:  # truncated or replaced: start over
                    self._read, self._partial = 0, b""
                f.seek(self._read)
                added = f.read(min(size, MAX_BYTES) - self._read)
        except FileNotFoundError:
            if self.growing:
                return  # the client creates it at its first handshake
            raise KeyLogError(f"cannot read key log {self.path}: no such file") from None
        except OSError as exc:
            raise KeyLogError(f"cannot read key log {self.path}: {exc.strerror or exc}") from None
        self._read += len(added)
        text = self._partial + added
        lines = text.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._bad("a line longer than any key log line")
            self._partial = b""
        for line in lines:
            self._line(line)
        self.cut_last_line = bool(self._partial.strip())
        if self.cut_last_line and not self.growing:
            # a complete log whose last line lacks its newline: take it if it parses whole
            self._line(self._partial, cut=True)

    def _bad(self, why: str) -> None:
        self.bad_lines += 1
        if self.first_bad is None:
            self.first_bad = why

    def _line(self, raw: bytes, cut: bool = False) -> None:
        line = raw.strip()
        if not line or line.startswith(b"#"):
            return
        parts = line.split()
        if len(parts) != 3 or len(line) > MAX_LINE:
            if not cut:
                self._bad("a line that is not LABEL RANDOM SECRET")
            return
        try:
            label, random, secret = parts[0].decode("ascii"), bytes.fromhex(parts[1].decode()), \
                bytes.fromhex(parts[2].decode())
        except (UnicodeDecodeError, ValueError):
            if not cut:
                self._bad("a line whose random or secret is not hex")
            return
        if len(random) != _RANDOM or not 16 <= len(secret) <= 64:
            if not cut:
                self._bad("a line whose client random is not 32 bytes or whose secret has an odd size")
            return
        self._secrets[(label, random)] = secret
        self._randoms.add(random)

    def refresh(self, *, force: bool = False) -> None:
        """Read what a growing key log gained (at most once per RECHECK unless ``force``)."""
        if not self.growing:
            return
        now = self._clock()
        if not force and now - self._checked < RECHECK:
            return
        self._checked = now
        try:
            self._load()
        except KeyLogError:
            pass  # the file went away for a moment (rotated by hand): what was read stays

    def secret(self, label: str, client_random: bytes) -> bytes | None:
        found = self._secrets.get((label, client_random))
        if found is None and self.growing:
            self.refresh()
            found = self._secrets.get((label, client_random))
        return found

    def knows(self, client_random: bytes) -> bool:
        """Whether any line names this client random (to tell "another session's key log" from "cut short")."""
        return client_random in self._randoms

    def summary(self) -> str:
        """One line about the log's shape, for the reasons a session has no key."""
        extra = ""
        if self.bad_lines:
            extra += f"; {self.bad_lines} unreadable line(s), the first {self.first_bad}"
        if self.cut_last_line and not self.growing:
            extra += "; its last line is cut short"
        return f"{len(self._secrets)} secret(s) in {self.path}{extra}"
