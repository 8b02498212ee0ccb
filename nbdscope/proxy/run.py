"""`nbdscope proxy`: the relay in this process, the watcher (decoding, rules, outputs)
in a forked child fed through a pipe, so the two run on different cores. The child
ignores SIGINT and SIGTERM and ends when the relay closes the pipe, so every record
the relay sent is written out before the command exits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from contextlib import ExitStack

from nbdscope.proxy.addresses import Address
from nbdscope.proxy.relay import Relay
from nbdscope.proxy.rewrite import FlagRewriter
from nbdscope.proxy.tap import Ring
from nbdscope.proxy.watcher import Watcher

FLUSH_EVERY = 0.25  # seconds between flushes of the outputs


def _watch(read_fd: int, ring: Ring, jsonl: str | None, pcapng: str | None, quiet: bool, redact: bool) -> int:
    """The child: returns its exit status."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Every message makes a few short-lived, acyclic objects: collect cycles far less often
    # than after every 700 allocations, and never rescan what was loaded at start.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    with ExitStack() as stack:
        jsonl_file = stack.enter_context(open(jsonl, "wb")) if jsonl else None
        pcap_file = stack.enter_context(open(pcapng, "wb")) if pcapng else None
        watcher = Watcher(jsonl=jsonl_file, pcapng=pcap_file, quiet=quiet, redact=redact)
        result = watcher.run(read_fd, ring, FLUSH_EVERY)
        print(watcher.summary(result), file=sys.stderr, flush=True)
    return 0


def run_proxy(listen: Address, upstream: Address, *, jsonl: str | None, pcapng: str | None, quiet: bool,
              set_mask: int, clear_mask: int, redact: bool, grace: float, stack: ExitStack,
              delays: dict[int, float] | None = None) -> int:
    for path in filter(None, (jsonl, pcapng)):  # fail in one line before forking
        with open(path, "ab"):
            pass
    ring = Ring()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(write_fd)
        status = 1
        try:
            status = _watch(read_fd, ring, jsonl, pcapng, quiet, redact)
        except BaseException as exc:  # one line, never a traceback
            print(f"nbdscope proxy: watcher failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(status)
    os.close(read_fd)
    rewriter = (lambda: FlagRewriter(set_mask, clear_mask)) if set_mask or clear_mask else None
    relay = Relay(listen, upstream, write_fd, ring, rewriter=rewriter, grace=grace, delays=delays)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await relay.start()
        print(f"nbdscope proxy: listening on {listen}, relaying to {upstream}", file=sys.stderr, flush=True)
        await stop.wait()
        await relay.stop()

    try:
        import uvloop  # a faster event loop when installed; the relay works the same without it

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(main())
    finally:
        with contextlib.suppress(OSError):
            os.close(write_fd)  # end of records: the watcher finishes its outputs and exits
        _, status = os.waitpid(child, 0)
    return 0 if os.waitstatus_to_exitcode(status) == 0 else 2
