"""Producers for the TUI: each runs one pipeline (``nbdscope.pipeline.run``) in its own
thread with the store as an addon, so reading a file, relaying or capturing never
waits for the screen."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Any

from nbdscope import pipeline
from nbdscope.analysis.addons import Addon
from nbdscope.tui.store import Store


class Producer:
    """A pipeline run in the background. ``label`` says what it reads; ``live`` whether more can come."""

    def __init__(self, store: Store, source: pipeline.Source, extra: Sequence[Addon] = (), *,
                 selection: Any = None) -> None:
        self.store, self.source, self.extra = store, source, list(extra)
        self.selection = selection  # nbdscope.selection.Selection or None
        self.label, self.live = source.label, source.live
        self.thread = threading.Thread(target=self._guarded, name=f"nbdscope-{type(source).__name__}", daemon=True)
        self.result: pipeline.Result | None = None  # once the run has ended

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0, *, now: bool = False) -> None:
        """Ask the source to end and wait (bounded) for the run; ``now``: a proxy closes its sessions at once."""
        close_now = getattr(self.source, "close_now", None) if now else None
        close_now() if close_now is not None else self.source.stop()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def open_sessions(self) -> int:
        """Clients connected through a proxy source (0 for the others): quitting would close them."""
        count = getattr(self.source, "open_sessions", None)
        return int(count()) if count is not None and not self.store.done else 0

    def summary(self) -> str | None:
        """The line a proxy source prints on exit (the plain proxy's own), once the run has ended."""
        line = getattr(self.source, "summary", None)
        return line(self.result) if line is not None and self.result is not None else None

    def _guarded(self) -> None:
        try:
            result = self.result = pipeline.run(self.source, [self.store, *self.extra], selection=self.selection)
            for a in result.internal_errors():
                self.store.add_notice(a.message)
            self.settle()
        except Exception as exc:  # shown in the UI's status line instead of killing the thread silently
            self.store.add_notice(f"{self.label}: stopped: {type(exc).__name__}: {exc}")
        finally:
            self.store.done = True

    def settle(self) -> None:
        """After a whole file was read: what was loaded stays for the life of the UI, so take it out of
        the collector's scans, or every later full collection walks a million events (a second or more)."""
        if not self.live:
            import gc

            gc.collect()
            gc.freeze()


def file_producer(store: Store, paths: Sequence[str], ports: Collection[int] = (), *,
                  selection: Any = None) -> Producer:
    return Producer(store, pipeline.FileSource(paths, ports), selection=selection)


def live_producer(store: Store, interface: str, ports: Collection[int] = (), bpf: str = "tcp",
                  buffer_kib: int = 65536, *, selection: Any = None) -> Producer:
    """A live capture; tcpdump is started here, so a bad interface fails before the screen comes up."""
    source = pipeline.LiveSource(interface, ports, bpf=bpf, buffer_kib=buffer_kib, on_notice=store.add_notice)
    source.start()
    return Producer(store, source, selection=selection)
