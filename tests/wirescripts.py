"""Whole conversations for decoder and rule tests: handshakes as (direction, bytes) scripts built
from tests/nbdwire.py, and a script run through a fresh decoder.

Shared by tests/unit and tests/fuzz, which is why they live here rather than in a test module
(test modules do not import one another)."""

from __future__ import annotations

from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from tests import nbdwire as w

Script = list[tuple[str, bytes]]


def run(script: Script, **kw: object) -> list[ev.Event]:
    """Every event a decoder makes of ``script``, one frame per message, then a FIN."""
    conn = Connection(**kw)  # type: ignore[arg-type]  # keyword options as each test needs them
    out: list[ev.Event] = []
    for frame, (direction, data) in enumerate(script, 1):
        out += conn.feed(direction, data, frame=frame, time=frame / 1000)  # type: ignore[arg-type]  # str, not Direction
    out += conn.close("fin", frame=len(script) + 1, time=1.0)
    return out


def of(events: list[ev.Event], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def go_handshake(tflags: int = 0x14D, structured: bool = True) -> Script:
    """Fixed newstyle to NBD_OPT_GO on export "disk", with block sizes and (structured) base:allocation as 7."""
    s: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]
    if structured:
        s += [("c2s", w.option(8)), ("s2c", w.opt_reply(8, 1))]
        s += [("c2s", w.option(10, w.opt_meta_data("disk", ["base:allocation"]))),
              ("s2c", w.opt_reply(10, 4, w.meta_context(7, "base:allocation"))), ("s2c", w.opt_reply(10, 1))]
    s += [("c2s", w.option(7, w.opt_go_data("disk", (3,)))),
          ("s2c", w.opt_reply(7, 3, w.info_export(1 << 20, tflags))),
          ("s2c", w.opt_reply(7, 3, w.info_block_size(512, 4096, 1 << 25))),
          ("s2c", w.opt_reply(7, 1))]
    return s


def handshake(tflags: int, size: int = 1 << 20, block: tuple[int, int, int] | None = None,
              structured: bool = True, contexts: bool = True) -> Script:
    """Fixed newstyle to NBD_OPT_GO on the default export, each part optional, as the rule tests vary them."""
    s: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]
    if structured:
        s += [("c2s", w.option(8)), ("s2c", w.opt_reply(8, 1))]
        if contexts:
            s += [("c2s", w.option(10, w.opt_meta_data("", ["base:allocation"]))),
                  ("s2c", w.opt_reply(10, 4, w.meta_context(1, "base:allocation"))), ("s2c", w.opt_reply(10, 1))]
    s += [("c2s", w.option(7, w.opt_go_data("", (3,) if block else ()))),
          ("s2c", w.opt_reply(7, 3, w.info_export(size, tflags)))]
    if block:
        s.append(("s2c", w.opt_reply(7, 3, w.info_block_size(*block))))
    s.append(("s2c", w.opt_reply(7, 1)))
    return s
