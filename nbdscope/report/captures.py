"""The outputs that are captures, each an addon: the annotated copy of an input
(``analyze -o FILE.pcapng``) and the proxy's record of what it relayed (``--pcapng``).
Reading, writing and redaction are capture/pcapio's; these only decide what to write."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from nbdscope import vocab as it
from nbdscope.analysis.addons import Addon
from nbdscope.capture.pcapio.redact import DataMask, FrameRedaction

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine, Result


class AnnotatedCapture(Addon):
    """The input capture back as pcapng, each finding a packet comment. With ``redaction`` (whose
    trace the file source fills) read and write data are zeroed, learnt from the decoder as the run goes."""

    def __init__(self, source: str, out: BinaryIO, redaction: FrameRedaction | None = None) -> None:
        self.source, self.out, self.redaction = source, out, redaction
        self.engine: Engine | None = None
        if redaction is not None:
            self.NEEDS = frozenset({"payload-ranges"})
            redaction.connection = lambda conn: self.engine.connection(conn) if self.engine else None

    @staticmethod
    def new_redaction() -> FrameRedaction:
        """A redaction to hand both to this addon and, as ``trace``, to the file source."""
        return FrameRedaction(lambda conn: None)

    def started(self, engine: Engine) -> None:
        self.engine = engine

    def stream(self, item: it.StreamItem) -> None:
        if self.redaction is not None:
            self.redaction.collect(item)

    def finished(self, result: Result) -> None:
        from nbdscope.report.annotate import write_annotated

        spans = self.redaction.finish() if self.redaction is not None else None
        write_annotated(self.source, self.out, result.anomalies, spans)


class RelayedCapture(Addon):
    """The proxy's ``--pcapng``: what passed, as made-up TCP connections whose packets are the frames
    the proxy source numbered; notes (rewritten bytes, Unix sockets) become packet comments, and with
    ``redact`` read and write data are zeroed, headers and lengths kept."""

    def __init__(self, out: BinaryIO, *, redact: bool = False) -> None:
        from nbdscope.capture.pcapio.synth import SessionCapture

        self.capture = SessionCapture(out)
        self.mask = DataMask() if redact else None
        if redact:
            self.NEEDS = frozenset({"payload-ranges"})
        self.engine: Engine | None = None
        self.notes: dict[tuple[int, str], str] = {}
        self.offsets: dict[tuple[int, str], int] = {}

    def started(self, engine: Engine) -> None:
        self.engine = engine

    def stream(self, item: it.StreamItem) -> None:
        if type(item) is it.StreamData:
            key = (item.conn, item.dir)
            start = self.offsets.get(key)
            if start is None:
                return
            self.offsets[key] = start + len(item.data)
            data = self._redacted(item, start) if self.mask is not None else item.data
            self.capture.data(item.conn, item.dir, data, item.time, self.notes.pop(key, None))
        elif isinstance(item, it.StreamNote):
            key = (item.conn, item.dir)
            self.notes[key] = f"{self.notes[key]}; {item.text}" if key in self.notes else item.text
        elif isinstance(item, it.StreamOpen):
            self.offsets[(item.conn, "c2s")] = self.offsets[(item.conn, "s2c")] = 0
            self.capture.open(item.conn, item.client, item.server, item.time, self.notes.pop((item.conn, "c2s"), None))
        elif isinstance(item, it.StreamClose) and (item.conn, "c2s") in self.offsets:
            left = "; ".join(filter(None, (self.notes.get((item.conn, d)) for d in ("c2s", "s2c"))))
            self.capture.close(item.conn, item.by or "c2s", item.time, left or None,  # e.g. closed by the proxy
                               reset=item.how == "rst")
            if self.mask is not None:
                self.mask.drop(item.conn)
            for d in ("c2s", "s2c"):
                self.offsets.pop((item.conn, d), None)
                self.notes.pop((item.conn, d), None)

    def _redacted(self, item: Any, start: int) -> bytes | memoryview:
        decoder = self.engine.connection(item.conn) if self.engine is not None else None
        if decoder is None or self.mask is None:
            return item.data  # type: ignore[no-any-return]
        key = (item.conn, item.dir)
        self.mask.add(key, decoder.take_payload_ranges(item.dir))
        out = bytearray(item.data)
        self.mask.zero(out, 0, key, start, len(out))
        self.mask.forget_before(key, start + len(out))
        settled = decoder.settled(item.dir)
        if settled is not None and settled < start + len(out):
            # part of a TLS record the key log decrypts, not yet whole: it may be data, and this packet cannot
            # wait, so its ciphertext is zeroed (docs/TLS.md)
            cut = max(0, settled - start)
            out[cut:] = bytes(len(out) - cut)
        return bytes(out)
