"""The compiled per-message path for the proxy: the Scanner fed the relay's tap data records.

A tap data record is one direction's relayed bytes of one connection, in order and with
nothing lost, so there is no capture or TCP framing to pass over: the Scanner's ``feed``
takes the bytes themselves, cut into the frames the tap reader gives them
(proxy/source.py, MAX_SEGMENT bytes a frame). Adoption and release are the Accelerator's
(nbdscope/fastpath.py), under the same conditions; only the TCP halves are absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbdscope.fastpath import _DONE, _OFFSET_DATA, _READ, _WRITE, Accelerator, _fastpath, available, engine_allows
from nbdscope.spec import magics as M

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine
    from nbdscope.capture.halves import Half


class TapAccelerator(Accelerator):
    """Hands the proxy's steady connections to a Scanner and takes them back."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.scanner = _fastpath.Scanner(True, False, 14, 12, M.REQUEST_MAGIC, M.SIMPLE_REPLY_MAGIC,
                                         M.STRUCTURED_REPLY_MAGIC, _READ, _WRITE, _DONE, _OFFSET_DATA, self.release)
        self.feed = self.scanner.feed  # (slot, 0 for c2s or 1 for s2c, data, frame, time, segment) -> (frame, rest)

    def slot_of(self, cid: int) -> int | None:
        """The Scanner's slot of this connection if it is adopted."""
        return self.keys.get(_key(cid, 0))

    def _halves(self, cid: int) -> tuple[tuple[bytes, Half | None], tuple[bytes, Half | None]] | None:
        return (_key(cid, 0), None), (_key(cid, 1), None)


def _key(cid: int, side: int) -> bytes:
    """A Scanner key for a side of a tap connection (never matched against packets: no ``scan`` here)."""
    return (cid * 2 + side).to_bytes(12, "big")


def for_tap(engine: Engine) -> TapAccelerator | None:
    """A TapAccelerator for this engine, or None where the pure-Python path must do everything."""
    if not available() or not engine_allows(engine):
        return None
    return TapAccelerator(engine)
