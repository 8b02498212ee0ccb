"""One way to run nbdscope: a source of stream items, through the engine, into addons.

Every command goes through ``run``: ``analyze`` (capture files), ``live`` (tcpdump on an
interface), ``proxy`` (the relay's tap) and the TUI over any of them. A source only
yields stream items (``nbdscope.vocab``); what is done with the decoded events is
the addons' business, so a new input is one Source class and a new output one
Addon class, and no command wires an engine by hand.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, BinaryIO, Protocol

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.engine import Engine, FindingFilter, Result
from nbdscope.tls.keylog import KeyLog
from nbdscope.vocab import StreamItem


class Source(Protocol):
    """Where stream items come from. ``items`` may block while waiting for traffic (live, proxy);
    ``stop`` asks it, from another thread or a signal handler, to end ``items`` soon."""

    label: str
    live: bool

    def items(self) -> Iterator[StreamItem]: ...

    def stop(self) -> None: ...


def run(source: Source, addons: Sequence[Addon] = (), *, verify_data: bool = False,
        selection: FindingFilter | None = None, tls_keys: KeyLog | None = None) -> Result:
    """Feed everything the source yields through a new engine into the addons; the run's result.
    ``selection`` (--select/--ignore) decides which findings are reported; the rest are only counted.
    ``tls_keys`` (--tls-keylog): the peers' key log, to decode inside TLS."""
    engine = Engine(addons, verify_data=verify_data, selection=selection, tls_keys=tls_keys)
    accelerate = getattr(source, "accelerate", None)
    if accelerate is not None:
        accelerate(engine)  # the compiled per-message path, where the engine's addons allow it
    return engine.run(source.items())


class FileSource:
    """Capture files read once as one capture (with a progress bar on a terminal if asked): several files
    or a directory are the pieces of a rotating set, read in the order of their first timestamps
    (capture/rotation.py); CaptureError names a directory without captures."""

    live = False

    def __init__(self, paths: Sequence[str], ports: Collection[int] = (), *, progress: bool = False,
                 trace: list[Any] | None = None) -> None:
        from nbdscope.capture.rotation import capture_set

        self.paths, self.ports, self.progress = capture_set(paths), list(ports), progress
        self.trace = trace  # where each delivered byte lay in which frame (capture/tcp.py), for redaction
        self.label = ", ".join(self.paths)
        self._stopped = False
        self.native: Any = None  # nbdscope.fastpath.Accelerator, set by ``accelerate``

    def accelerate(self, engine: Engine) -> None:
        """Let the compiled path take the quiet messages of this engine's connections (nbdscope/fastpath.py)."""
        from nbdscope.fastpath import for_engine

        self.native = for_engine(engine, trace=self.trace)

    def items(self) -> Iterator[StreamItem]:
        from nbdscope.capture import read_captures
        from nbdscope.capture.pcapio import is_stream
        from nbdscope.report.progress import ProgressBar

        with ExitStack() as stack:
            # a pipe has no size to measure progress against
            bar = self.progress and not any(is_stream(p) for p in self.paths)
            update = stack.enter_context(ProgressBar(self.paths)).update if bar else None
            for item in read_captures(self.paths, extra_ports=self.ports, progress=update, reuse_buffers=True,
                                      trace=self.trace, native=self.native):
                if self._stopped:
                    return
                yield item

    def stop(self) -> None:
        self._stopped = True


class LiveSource:
    """tcpdump on an interface, its pcap read from a pipe as it is written (nbdscope.capture.live)."""

    live = True

    def __init__(self, interface: str, ports: Collection[int] = (), *, bpf: str = "tcp", buffer_kib: int = 65536,
                 on_notice: object = None, save: BinaryIO | None = None) -> None:
        from nbdscope.capture.live import LiveCapture

        self.capture = LiveCapture(interface, bpf=bpf, extra_ports=ports, buffer_kib=buffer_kib,
                                   on_notice=on_notice, save=save)  # type: ignore[arg-type]
        self.label = f"capture on {interface}"

    def start(self) -> None:
        """Start tcpdump now, so that a bad interface or a missing tcpdump fails before any output."""
        self.capture.start()

    def items(self) -> Iterator[StreamItem]:
        yield from self.capture.items()

    def stop(self) -> None:
        self.capture.request_stop()

    @property
    def dropped(self) -> int:
        return self.capture.dropped
