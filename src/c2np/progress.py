"""Progress display for long-running work (rich).

A bar is drawn on stderr when stderr is a terminal. When it is not (a log file, CI), each
bar becomes plain lines: one when the work starts, one every ``LOG_EVERY_S`` seconds
while it goes on and one when it ends, so a log never sits silent through a long stage. :func:`stage` names the stage (e.g. model, task
and split) that every bar opened inside it carries as a prefix.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

_STAGE: ContextVar[str] = ContextVar("c2np_progress_stage", default="")

#: Without a terminal, a line at least this often (seconds) while work goes on.
LOG_EVERY_S = 30.0


@contextmanager
def stage(label: str) -> Iterator[None]:
    """Prefix every progress bar opened in this block with ``label``."""
    token = _STAGE.set(label)
    try:
        yield
    finally:
        _STAGE.reset(token)


def _label(description: str) -> str:
    prefix = _STAGE.get()
    return f"{prefix}: {description}" if prefix else description


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True, start: int = 0
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n=1)``; a rich bar on a terminal, start/end lines otherwise.

    ``start``: items already done before this call (a resumed job); the time estimate
    counts only the items done from here on."""
    if not enabled:
        yield lambda n=1: None
        return
    description = _label(description)
    console = Console(stderr=True, markup=False, soft_wrap=True)  # labels carry user text
    if not console.is_terminal:
        yield from _log_lines(console, total, description, start)
        return
    columns = (TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=start)
        yield lambda n=1: bar.advance(task, n)


def _log_lines(console: Console, total: int, description: str, done: int = 0
               ) -> Iterator[Callable[[int], None]]:
    """The no-terminal form of a bar: start, every ``LOG_EVERY_S`` seconds, and end lines."""
    start = last = time.perf_counter()

    def say(text: str) -> None:
        console.print(f"{description}: {text}", highlight=False)

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last >= LOG_EVERY_S and done < total:
            last = now
            say(f"{done:,}/{total:,} after {now - start:.0f} s")

    say(f"{total:,} items ..." if not done else f"{total:,} items, {done:,} done before ...")
    yield advance
    say(f"{done:,}/{total:,} done in {time.perf_counter() - start:.1f} s")


def _share_cores(threads: int) -> None:
    """Pool initializer: cap this worker's BLAS/OpenMP threads. Without it each of J workers
    runs numpy's OpenBLAS with one thread per core, J x cores threads that spin while they
    wait (on a 64-core GPU machine, 60 scoring workers did not finish a Task 1 OOD split in
    7 minutes; 2 workers on the 2-core dev machine scored it in 13, 1,292 CPU-s in all)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def worker_threads(jobs: int) -> int:
    """BLAS threads per worker process when ``jobs`` of them share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def map_with_progress(fn: Callable, items, total: int, description: str, jobs: int = 1,
                      enabled: bool = True, chunksize: int = 8) -> list:
    """``[fn(x) for x in items]`` in order, in ``jobs`` processes when > 1, with a bar.
    The processes share the cores: each gets ``worker_threads(jobs)`` BLAS threads."""
    return list(imap_with_progress(fn, items, total, description, jobs, enabled, chunksize))


def imap_with_progress(fn: Callable, items, total: int, description: str, jobs: int = 1,
                       enabled: bool = True, chunksize: int = 8, start: int = 0) -> Iterator:
    """:func:`map_with_progress` as a generator: each result as soon as it and all before it
    are done, so a caller can keep them as they come (``start``: items done before, for the
    bar of a resumed job)."""
    from concurrent.futures import ProcessPoolExecutor

    with progress_bar(total, description, enabled=enabled, start=start) as advance:
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_share_cores,
                                     initargs=(worker_threads(jobs),)) as pool:
                for res in pool.map(fn, items, chunksize=chunksize):
                    yield res
                    advance()
        else:
            for item in items:
                yield fn(item)
                advance()
