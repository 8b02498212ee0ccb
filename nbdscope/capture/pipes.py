"""Pipe capacity (Linux): the 64 KiB default holds one loopback segment, so a writer
that outpaces its reader for a moment blocks. Both live sources (tcpdump's pipe and
the proxy's relay-to-watcher pipe) ask for more."""

from __future__ import annotations

import fcntl

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def grow_pipe(fd: int, size: int) -> None:
    """Ask for ``size`` bytes (root may exceed the system limit), else for the limit an
    unprivileged process may have; the default size still works, with less slack."""
    sizes = [size]
    try:
        with open("/proc/sys/fs/pipe-max-size") as limit:
            sizes.append(min(size, int(limit.read())))
    except (OSError, ValueError):
        pass
    for want in sizes:
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, want)
            return
        except OSError:
            continue
