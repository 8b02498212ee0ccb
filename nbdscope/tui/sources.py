"""Producers for the TUI: each runs the engine in its own thread and appends to the
store, so reading a file, relaying or capturing never waits for the screen."""

from __future__ import annotations

import asyncio
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
        from nbdscope.capture import read_captures

        for item in read_captures(self.paths, extra_ports=self.ports, reuse_buffers=True):
            if self._stop.is_set():
                return
            self.engine.feed(item)
        self._finish()

    def _request_stop(self) -> None:
        self._stop.set()


class ProxySource(Source):
    """The transparent relay on its own event loop in this thread (signals stay with the UI)."""

    live = True

    def __init__(self, store: Store, listen: Any, upstream: Any, *, pcapng: str | None = None,
                 jsonl: str | None = None, set_mask: int = 0, clear_mask: int = 0, redact: bool = False,
                 grace: float = 5.0, delays: dict[int, float] | None = None) -> None:
        super().__init__(store)
        self.listen, self.upstream = listen, upstream
        self.options = {"pcapng": pcapng, "jsonl": jsonl, "set_mask": set_mask, "clear_mask": clear_mask,
                        "redact": redact, "grace": grace, "delays": delays}
        self.label = f"proxy {listen} → {upstream}"
        self.ready = threading.Event()  # listening (or failed to)
        self.error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.relay: Any = None

    def run(self) -> None:
        import json

        from nbdscope.proxy.relay import Relay
        from nbdscope.proxy.rewrite import FlagRewriter
        from nbdscope.report.pcapng import PcapngWriter
        from nbdscope.report.records import message_record

        o = self.options
        with ExitStack() as stack:
            pcap = stack.enter_context(open(o["pcapng"], "wb")) if o["pcapng"] else None
            jsonl = stack.enter_context(open(o["jsonl"], "w", encoding="utf-8")) if o["jsonl"] else None
            if jsonl is not None:  # the same JSONL timeline as the console proxy, beside the UI
                store_message, store_anomaly = self.store.on_message, self.store.on_anomaly

                def on_message(session: Any, e: Any) -> None:
                    store_message(session, e)
                    jsonl.write(json.dumps(message_record(session.id, e, self.engine.t0())) + "\n")

                def on_anomaly(a: Any) -> None:
                    store_anomaly(a)
                    jsonl.write(json.dumps({"type": "ANOMALY", **a.as_json()}) + "\n")

                self.engine = Engine(on_message=on_message, on_anomaly=on_anomaly, keep_headers=True,
                                     track_payload=bool(o["redact"]))
            elif o["redact"]:
                self.engine = Engine(on_message=self.store.on_message, on_anomaly=self.store.on_anomaly,
                                     keep_headers=True, track_payload=True)
            set_mask, clear_mask = o["set_mask"], o["clear_mask"]
            rewriter = (lambda: FlagRewriter(set_mask, clear_mask)) if set_mask or clear_mask else None
            self.relay = Relay(self.listen, self.upstream, self.engine, PcapngWriter(pcap), rewriter=rewriter,
                               grace=o["grace"], redact=o["redact"], delays=o["delays"])

            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop_event = asyncio.Event()
                try:
                    await self.relay.start()
                except OSError as exc:
                    self.error = f"{self.listen}: {exc.strerror or exc}"
                    self.store.add_notice(f"proxy: cannot listen: {self.error}")
                    self.ready.set()
                    return
                self.ready.set()
                while not self._stop_event.is_set():
                    try:
                        await asyncio.wait_for(self._stop_event.wait(), 0.25)
                    except TimeoutError:
                        pass
                    if jsonl is not None:
                        jsonl.flush()
                await self.relay.stop()

            asyncio.run(main())
            self._finish()

    def _request_stop(self) -> None:
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop has just ended


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
