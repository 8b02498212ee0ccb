"""Which requests await replies: the decoder matches each reply to its request here
by cookie, and others (the analysis layer) may read the table through ``view``.

Each entry keeps the request event and, beside it, the few values every reply
copies from it, unpacked at once on the per-message path (reading them off the
event one by one cost more). Chunk counts and errors are kept apart, only for
replies that run over several chunks.

A cookie the client reuses while its first request is still unanswered (which it
should not do) shadows the earlier entry instead of replacing it: once one reply
completes, the earlier request is in flight again, so the second reply matches a
request too and is not taken for an invented cookie (the reuse is one finding).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from nbdscope.decoder import events as ev

# (request, command, frame, offset, length its reply is about, flags, time)
Entry = tuple[ev.Request, int, int, int, int, int, float]


class InFlightView(Mapping[int, ev.Request]):
    """Read-only, always current: cookie -> the request still awaiting (the rest of) its reply."""

    __slots__ = ("_table",)

    def __init__(self, table: dict[int, Entry]) -> None:
        self._table = table

    def __getitem__(self, cookie: int) -> ev.Request:
        return self._table[cookie][0]

    def __contains__(self, cookie: object) -> bool:
        return cookie in self._table

    def __iter__(self) -> Iterator[int]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class InFlight:
    """Requests sent and not yet completely answered, by cookie."""

    __slots__ = ("_chunks", "_errored", "_shadowed", "_table", "get", "view")

    def __init__(self) -> None:
        self._table: dict[int, Entry] = {}
        self._chunks: dict[int, int] = {}  # cookie -> reply chunks seen so far (only while more are due)
        self._errored: set[int] = set()  # cookies whose reply so far included an error chunk
        self._shadowed: dict[int, list[Entry]] = {}  # cookie -> earlier requests a reuse of it hid
        self.get = self._table.get  # cookie -> Entry | None, for the decoder
        self.view: Mapping[int, ev.Request] = InFlightView(self._table)

    def add(self, request: ev.Request, cookie: int, command: int, frame: int, offset: int, length: int,
            flags: int, time: float) -> None:
        """A request was sent (``length``: what its reply is about, see ``effect_length``)."""
        table = self._table
        hidden = table.get(cookie)
        if hidden is not None:  # reused while in flight: keep the earlier request for the other reply
            self._shadowed.setdefault(cookie, []).append(hidden)
        table[cookie] = (request, command, frame, offset, length, flags, time)
        if self._chunks:
            self._chunks.pop(cookie, None)  # a reused cookie starts afresh
            self._errored.discard(cookie)

    def chunks(self, cookie: int) -> int:
        """Reply chunks that arrived so far for this request (0 for none or a simple reply)."""
        return self._chunks.get(cookie, 0)

    def errored(self, cookie: int) -> bool:
        """An error chunk was part of this request's reply so far."""
        return cookie in self._errored

    def answer(self, cookie: int, completes: bool, error: bool, time: float) -> tuple[Entry | None, bool, float | None]:
        """Match one reply message: the request's entry (None: none in flight), whether the
        reply as a whole failed (said on its last message), and the latency then."""
        entry = self._table.get(cookie)
        if entry is None:
            return None, error and completes, None
        if not completes:
            self._chunks[cookie] = self._chunks.get(cookie, 0) + 1
            if error:
                self._errored.add(cookie)
            return entry, False, None
        return entry, *self.finish(cookie, entry, error, time)

    def finish(self, cookie: int, entry: Entry, error: bool, time: float) -> tuple[bool, float]:
        """The last message of the reply to a request found with ``get``: whether the reply
        failed, and its latency."""
        del self._table[cookie]
        if self._shadowed:
            hidden = self._shadowed.get(cookie)
            if hidden:
                self._table[cookie] = hidden.pop()
                if not hidden:
                    del self._shadowed[cookie]
        if self._chunks:
            self._chunks.pop(cookie, None)
            if cookie in self._errored:
                self._errored.discard(cookie)
                error = True
        return error, round((time - entry[6]) * 1e6, 1)


def effect_length(request: ev.Request) -> int:
    """The length a request's reply is about (BLOCK_STATUS may carry it in its payload)."""
    return request.length if request.effect_length is None else request.effect_length
