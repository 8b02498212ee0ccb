"""A progress bar on stderr for long inputs: only on a terminal, only after a second."""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

DELAY = 1.0
CHECK_EVERY = 2048


class ProgressTicker:
    """Counts frames per input and shows how far through the inputs' total frames... we are by
    time, since a streaming reader cannot know a file's frame count in advance: the bar tracks
    the frame of the last item against an estimate from the file size."""

    def __init__(self, files: list[str]) -> None:
        self.enabled = sys.stderr.isatty() and os.environ.get("NBDSCOPE_NO_PROGRESS") is None
        self.files = files
        self.sizes = {f: max(1, os.path.getsize(f)) for f in files if os.path.isfile(f)}
        self.total = sum(self.sizes.values())
        self.start = time.monotonic()
        self.calls = 0
        self.progress: Progress | None = None
        self.task: Any = None
        self.done_before: dict[str, int] = {}
        acc = 0
        for f in files:
            self.done_before[f] = acc
            acc += self.sizes.get(f, 0)

    def __enter__(self) -> ProgressTicker:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()

    def tick(self, item: Any) -> None:
        if not self.enabled:
            return
        self.calls += 1
        if self.calls % CHECK_EVERY:
            return
        if self.progress is None:
            if time.monotonic() - self.start < DELAY:
                return
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("frame {task.fields[frame]}"), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task("reading", total=self.total, frame=0)
            self.progress.start()
        source = getattr(item, "source", None) or getattr(self, "_source", self.files[0])
        self._source = source
        position = getattr(item, "offset", None)
        done = self.done_before.get(source, 0) + (position or 0)
        self.progress.update(self.task, completed=done if position is not None else None,
                             description=os.path.basename(source), frame=getattr(item, "frame", 0))
