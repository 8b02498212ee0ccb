"""Several inputs as one capture: the files a rotating ``tcpdump -C/-W/-G`` writes, given one by
one in any order or as the directory that holds them.

tcpdump names the pieces after the first (``cap.pcap1``, ``cap.pcap2``, or a strftime pattern with
``-G``), so names say neither what a file is nor where it belongs: a directory is taken as every file in
it that opens as a capture (compressed ones too), and the set is put in the order of each file's first
packet's timestamp, which is the order tcpdump wrote them in, whatever the names and the order of the
arguments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from typing import cast

from nbdscope.capture.pcapio.opening import CaptureError, is_stream, open_capture
from nbdscope.capture.pcapio.read import Frame, frames


def first_time(path: str) -> float | None:
    """The timestamp of the file's first packet; None for a file without packets, for damage before the
    first one, or for a pipe (which reading would consume)."""
    if is_stream(path):
        return None
    problems: list[str] = []
    reader = cast(Generator[Frame, None, None], frames(path, problems))
    try:
        first = next(reader, None)
    except (CaptureError, OSError, EOFError, ValueError):
        return None
    finally:
        reader.close()
    return first[1] if first is not None else None


def directory_captures(path: str) -> list[str]:
    """The capture files directly inside a directory (hidden files and subdirectories left out), by name."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise CaptureError(f"{path}: cannot list the directory: {exc.strerror}") from None
    found = []
    for name in names:
        full = os.path.join(path, name)
        if name.startswith(".") or not os.path.isfile(full):
            continue
        try:
            open_capture(full)[0].close()
        except CaptureError:
            continue  # a README, an index, a half-written file: not part of the set
        found.append(full)
    if not found:
        raise CaptureError(f"{path}: no pcap or pcapng file in this directory")
    return found


def capture_set(paths: Sequence[str]) -> list[str]:
    """The inputs as files in reading order: directories replaced by their captures, and, when there is
    more than one file, all sorted by first timestamp (files without packets last; ties, and every file
    when one of them is a pipe, keep the order given)."""
    files: list[str] = []
    for path in paths:
        files.extend(directory_captures(path) if os.path.isdir(path) else [path])
    if len(files) < 2 or any(is_stream(f) for f in files):
        return files
    starts = {f: first_time(f) for f in files}
    return sorted(files, key=lambda f: math.inf if (t := starts[f]) is None else t)
