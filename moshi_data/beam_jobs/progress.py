"""Progress of local Beam runs: workers append one line per unit done to a file, the launcher draws a bar.

Beam's DirectRunner reports metrics only when the pipeline finishes, so local runs use this side
channel instead: a ``progress.log`` in a temporary folder of the launcher's machine (workers of a
local run share it), one short ``O_APPEND`` write per file or chunk (``"<kind> <count>\\n"``). Remote
runners get no channel (their own UI shows progress).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

from moshi_data.beam_jobs.options import LOCAL_RUNNERS


def mark(item, path: str | None, **counts: int):
    """Append ``kind count`` lines to the channel in one write; returns ``item`` (for ``beam.Map``)."""
    if path:
        line = "".join(f"{kind} {int(count)}\n" for kind, count in counts.items()).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return item


def read_counts(path: str, offset: int, totals: dict[str, int]) -> int:
    """Add the complete lines after ``offset`` to ``totals``; returns the new offset."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode().splitlines():
        kind, _, count = line.partition(" ")
        totals[kind] = totals.get(kind, 0) + int(count or 1)
    return offset + end


@contextmanager
def progress_bar(runner: str, total: int, unit: str, then: tuple[str, str] | None = None,
                 interval_s: float = 0.5, stream=None, enabled: bool | None = None) -> Iterator[str | None]:
    """Yield the channel path (None when there is no bar) and draw ``done / total`` while the block runs.

    ``unit`` is the kind counted against ``total`` (files, recordings). ``then``: a ``(kind,
    total_kind)`` pair: once ``unit`` is complete the bar counts ``kind`` against the sum of
    ``total_kind`` (documents written out of those read). The bar shows on a terminal only, unless
    ``enabled`` says otherwise."""
    stream = stream or sys.stderr
    if enabled is None:
        enabled = hasattr(stream, "isatty") and stream.isatty()
    if not enabled or runner not in LOCAL_RUNNERS or total <= 0:
        yield None
        return
    from tqdm import tqdm

    folder = tempfile.mkdtemp(prefix="moshi-data-progress-")
    path = os.path.join(folder, "progress.log")
    stop = threading.Event()
    sized = shutil.get_terminal_size((0, 0)).columns > 0  # a pseudo-terminal may report width 0
    bar = tqdm(total=total, unit=f" {unit}", desc=unit, file=stream, dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 20,
               leave=True)

    def follow() -> None:
        offset, totals, counted = 0, {}, unit
        while True:
            finished = stop.wait(interval_s)
            offset = read_counts(path, offset, totals)
            bar.n = totals.get(counted, 0)
            if counted == unit and bar.n >= total and then:
                bar.refresh()  # show the complete first phase before the next one
                counted, total_kind = then
                bar.unit, bar.desc = f" {counted}", counted
                bar.reset(total=max(totals.get(total_kind, 0), 1))
                bar.n = totals.get(counted, 0)
            bar.refresh()
            if finished:
                return

    thread = threading.Thread(target=follow, name="progress", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        bar.close()
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        os.rmdir(folder)
