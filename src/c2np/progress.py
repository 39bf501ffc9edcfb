"""Progress display for long-running work (rich), silent when disabled or not a TTY."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n=1)``; draws a rich progress bar on stderr when ``enabled``."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def map_with_progress(fn: Callable, items, total: int, description: str, jobs: int = 1,
                      enabled: bool = True, chunksize: int = 8) -> list:
    """``[fn(x) for x in items]`` in order, in ``jobs`` processes when > 1, with a bar."""
    from concurrent.futures import ProcessPoolExecutor

    out = []
    with progress_bar(total, description, enabled=enabled) as advance:
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for res in pool.map(fn, items, chunksize=chunksize):
                    out.append(res)
                    advance()
        else:
            for item in items:
                out.append(fn(item))
                advance()
    return out
