"""An example output: print every reply that took longer than a threshold.

Run it as `python docs/examples/slow_replies.py CAPTURE [MICROSECONDS]`. It is one addon
class and one call of the pipeline, which is all a new output needs; inside nbdscope the
registration is one line in the list of addons a command builds (nbdscope/cli.py).
"""

from __future__ import annotations

import sys

from nbdscope import pipeline
from nbdscope.analysis.addons import Addon
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS


class SlowReplies(Addon):
    """Collects (session, frame, command, latency) of replies slower than ``threshold_us``."""

    def __init__(self, threshold_us: float) -> None:
        self.threshold_us = threshold_us
        self.slow: list[tuple[str, int, str, float]] = []

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return issubclass(event_type, ev.Reply)  # the engine then never calls us for anything else

    def message(self, session: Session, event: ev.Event) -> None:
        assert isinstance(event, ev.Reply)
        if event.latency_us is not None and event.latency_us > self.threshold_us:
            self.slow.append((session.id, event.frame, COMMANDS.name(event.command or 0), event.latency_us))


def main(argv: list[str]) -> int:
    addon = SlowReplies(float(argv[1]) if len(argv) > 1 else 1000.0)
    pipeline.run(pipeline.FileSource([argv[0]]), [addon])
    for session, frame, command, latency in addon.slow:
        print(f"{session} frame {frame}: {command} took {latency:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
