"""A progress bar on stderr for long inputs: only on a terminal, only after a second."""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any

DELAY = 1.0


class ProgressBar:
    """Bytes read across all inputs; invisible for runs shorter than DELAY or off a terminal."""

    def __init__(self, files: list[str]) -> None:
        self.enabled = sys.stderr.isatty()
        sizes = [os.path.getsize(f) for f in files]
        self.offsets = dict(zip(files, (sum(sizes[:i]) for i in range(len(sizes))), strict=True))
        self.total = sum(sizes)
        self.start = time.monotonic()
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, path: str, frame: int, position: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            if time.monotonic() - self.start < DELAY:
                return
            # imported here: most runs are short or not on a terminal and never need it
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("frame {task.fields[frame]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task("reading", total=self.total, frame=0)
            self.progress.start()
        self.progress.update(self.task, completed=self.offsets[path] + position,
                             description=os.path.basename(path), frame=frame)
