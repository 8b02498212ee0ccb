"""The relay process: the relay in a forked child; the decoding, rules and outputs
(``nbdscope.proxy.source`` through the pipeline) in the parent, fed through a shared
ring and a pipe, so the two run on different cores and a slow output never delays a
relayed byte.

The child is forked before this process starts any thread or event loop. It ignores
SIGINT (Ctrl-C reaches both processes; the watcher passes it on), stops on SIGTERM
after the grace period, at once on a second SIGTERM or on SIGUSR1; closing its end
of the pipe tells the watcher that every record has arrived, so a stop always ends
with complete outputs. The TUI runs the same pipeline in a
thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nbdscope.proxy.addresses import Address
from nbdscope.proxy.relay import Relay, print_log
from nbdscope.proxy.rewrite import FlagRewriter
from nbdscope.proxy.tap import Ring

FLUSH_EVERY = 0.25  # seconds between flushes of the outputs
READY_TIMEOUT = 30.0


@dataclass
class RelayOptions:
    set_mask: int = 0
    clear_mask: int = 0
    grace: float = 5.0
    delays: dict[int, float] | None = None


class RelayProcess:
    """The relay running in a child process; ``fd`` and ``ring`` are what the watcher reads."""

    def __init__(self, listen: Address, upstream: Address, options: RelayOptions) -> None:
        self.ring = Ring()
        read_fd, write_fd = os.pipe()
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read_fd)
            os.close(ready_r)
            status = 2
            # Ctrl-C reaches the whole process group: only the watcher's word counts (it sends SIGTERM),
            # or one Ctrl-C would arrive twice and count as the second that closes sessions at once
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                _end_with(parent)
                status = _relay_main(listen, upstream, options, write_fd, self.ring, ready_w)
            except BaseException as exc:  # one line, never a traceback
                with contextlib.suppress(OSError):
                    os.write(ready_w, f"relay failed: {type(exc).__name__}: {exc}\n".encode())
            finally:
                os._exit(status)
        os.close(write_fd)
        os.close(ready_w)
        self.pid, self.fd, self._ready = pid, read_fd, ready_r
        self.status: int | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str | None:
        """None once the relay listens; otherwise why it could not."""
        ready, _, _ = select.select([self._ready], [], [], timeout)
        line = os.read(self._ready, 4096).decode(errors="replace").strip() if ready else "no answer from the relay"
        os.close(self._ready)
        return None if line == "ok" else line or "the relay exited"

    def stop(self, now: bool = False) -> None:
        """SIGTERM: stop after the grace period (a second one: at once); SIGUSR1: close every session now."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGUSR1 if now else signal.SIGTERM)

    def wait(self) -> int:
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        return self.status


def _end_with(parent: int) -> None:
    """A relay whose watcher was killed outright must not go on relaying unrecorded:
    ask Linux for SIGTERM when the parent dies (and check it has not died already)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        raise SystemExit(2)


def _keep_freed_memory() -> None:
    """Relayed chunks are 256 KiB bytes objects made and freed thousands of times a second;
    by default glibc gives such memory back to the kernel each time and faults fresh zeroed
    pages in for the next one. Keeping it in the heap saves that work (Linux with glibc only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 16 << 20)  # M_TOP_PAD
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: big chunks from the heap too, not fresh mappings


def _relay_main(listen: Address, upstream: Address, options: RelayOptions, write_fd: int, ring: Ring,
                ready_w: int) -> int:
    _keep_freed_memory()
    rewriter = None
    if options.set_mask or options.clear_mask:
        set_mask, clear_mask = options.set_mask, options.clear_mask
        rewriter = lambda: FlagRewriter(set_mask, clear_mask)  # noqa: E731
    def log(line: str, conn: int | None = None) -> None:  # through the watcher, which may be a terminal UI
        if relay.tap.broken:
            print_log(line, conn)
        else:
            relay.tap.log(line, time.time(), conn)

    relay = Relay(listen, upstream, write_fd, ring, rewriter=rewriter, grace=options.grace, delays=options.delays,
                  log=log)

    async def main() -> None:
        stop, now = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def terminate() -> None:  # the first asks for a stop after the grace period, the next for one now
            (now if stop.is_set() else stop).set()

        def at_once() -> None:
            stop.set()
            now.set()

        loop.add_signal_handler(signal.SIGTERM, terminate)
        loop.add_signal_handler(signal.SIGUSR1, at_once)
        try:
            await relay.start()
        except OSError as exc:
            os.write(ready_w, f"{exc.strerror or exc}\n".encode())
            return
        os.write(ready_w, b"ok\n")
        os.close(ready_w)
        await stop.wait()
        await relay.stop(now)

    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop  # a faster event loop when installed; the relay works the same without it

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main())
    return 0
