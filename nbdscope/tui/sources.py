"""Producers for the TUI: each runs the engine in its own thread and appends to the
store, so reading a file, relaying or capturing never waits for the screen."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from contextlib import ExitStack
from typing import Any

from nbdscope.analysis.engine import Engine
from nbdscope.tui.store import Store


class Source:
    """A background producer. ``label`` says what it reads; ``live`` whether more can come."""

    label = ""
    live = False

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = Engine(on_message=store.on_message, on_anomaly=store.on_anomaly, keep_headers=True)
        self.thread = threading.Thread(target=self._guarded, name=f"nbdscope-{type(self).__name__}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the producer to end and wait (bounded) for it."""
        self._request_stop()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as exc:  # shown in the UI's status line instead of killing the thread silently
            self.store.add_notice(f"{self.label}: stopped: {type(exc).__name__}: {exc}")
        finally:
            self.store.done = True

    def run(self) -> None:
        raise NotImplementedError

    def _request_stop(self) -> None:
        pass

    def _finish(self) -> None:
        result = self.engine.finish()
        self.store.problems.extend(result.problems)
        for p in result.problems:
            self.store.add_notice(f"{p.source}: frame {p.frame}: {p.message}; results up to there are kept")


class FileSource(Source):
    """Capture files, read once."""

    def __init__(self, store: Store, paths: Sequence[str], ports: Collection[int] = ()) -> None:
        super().__init__(store)
        self.paths, self.ports = list(paths), list(ports)
        self.label = ", ".join(self.paths)
        self._stop = threading.Event()

    def run(self) -> None:
        import gc

        from nbdscope.capture import read_captures

        for item in read_captures(self.paths, extra_ports=self.ports, reuse_buffers=True):
            if self._stop.is_set():
                return
            self.engine.feed(item)
        self._finish()
        # what was loaded stays for the life of the UI: take it out of the collector's
        # scans, or every later full collection walks a million events (a second or more)
        gc.collect()
        gc.freeze()

    def _request_stop(self) -> None:
        self._stop.set()


class ProxySource(Source):
    """The proxy: the relay in its forked child process (nbdscope.proxy.run.RelayProcess) and
    the proxy's own watcher in this thread, feeding the store through its hooks; the UI
    never delays a relayed byte."""

    live = True

    def __init__(self, store: Store, listen: Any, upstream: Any, *, pcapng: str | None = None,
                 jsonl: str | None = None, set_mask: int = 0, clear_mask: int = 0, redact: bool = False,
                 grace: float = 5.0, delays: dict[int, float] | None = None) -> None:
        super().__init__(store)
        self.listen, self.upstream = listen, upstream
        self.pcapng, self.jsonl, self.redact = pcapng, jsonl, redact
        self.options = (set_mask, clear_mask, grace, delays)
        self.label = f"proxy {listen} → {upstream}"
        self.ready = threading.Event()  # listening (or failed to)
        self.error: str | None = None
        self.relay: Any = None

    def start(self) -> None:
        """Fork the relay (before the UI starts any thread), wait until it listens, then watch."""
        import os

        from nbdscope.proxy.run import RelayOptions, RelayProcess

        self.relay = RelayProcess(self.listen, self.upstream, RelayOptions(*self.options))
        problem = self.relay.wait_ready()
        if problem is not None:
            self.error = f"{self.listen}: {problem}"
            self.relay.stop()
            self.relay.wait()
            os.close(self.relay.fd)
            self.store.add_notice(f"proxy: cannot listen: {self.error}")
            self.store.done = True
            self.ready.set()
            return
        self.ready.set()
        super().start()

    def run(self) -> None:
        import os

        from nbdscope.proxy.run import FLUSH_EVERY, JSONL_BUFFER
        from nbdscope.proxy.watcher import Watcher

        with ExitStack() as stack:
            jsonl = stack.enter_context(open(self.jsonl, "wb", buffering=JSONL_BUFFER)) if self.jsonl else None
            pcap = stack.enter_context(open(self.pcapng, "wb")) if self.pcapng else None
            quiet = stack.enter_context(open(os.devnull, "w"))  # the screen is the console now
            watcher = Watcher(jsonl=jsonl, pcapng=pcap, quiet=True, redact=self.redact, console=quiet,
                              log=self.store.add_notice, on_message=self.store.on_message,
                              on_anomaly=self.store.on_anomaly, keep_headers=True)  # the hex pane's bytes
            self.engine = watcher.engine
            try:
                watcher.run(self.relay.fd, self.relay.ring, FLUSH_EVERY)
            finally:
                self.relay.stop()
                self.relay.wait()
                os.close(self.relay.fd)

    def _request_stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()  # the relay ends its sessions (grace period), closes the pipe, the watcher drains it


class LiveSource(Source):
    """A live capture (tcpdump writing pcap to a pipe), decoded as it arrives."""

    live = True

    def __init__(self, store: Store, interface: str, ports: Collection[int] = (), bpf: str = "tcp",
                 buffer_kib: int = 65536) -> None:
        super().__init__(store)
        from nbdscope.capture.live import LiveCapture

        self.capture = LiveCapture(interface, bpf=bpf, extra_ports=ports, buffer_kib=buffer_kib,
                                   on_notice=store.add_notice)
        self.label = f"capture on {interface}"

    def run(self) -> None:
        for item in self.capture.items():
            self.engine.feed(item)
        self._finish()

    def _request_stop(self) -> None:
        self.capture.request_stop()
