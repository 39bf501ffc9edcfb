"""An exclusive, advisory lock on a store directory, so that two writers never interleave.

Two builds (or a build and an export) started into one directory would otherwise both
report success over a mix of each other's files. The lock is ``fcntl.flock`` on
``STORE/.c2np.lock``: the kernel releases it when the holder exits, even after a kill,
so a stale lock can never block the next run. While held, the file names the holder's
PID and action for the refusal message; it is emptied on release but left in place
(deleting it would let a third process lock a fresh inode while a second holds the old).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from c2np.errors import StoreError

LOCK = ".c2np.lock"


@contextmanager
def store_lock(store: Path, action: str) -> Iterator[None]:
    """Hold the store's exclusive lock for ``action`` ("build", "export", ...), or raise
    :class:`StoreError` naming the PID and action of the process that holds it."""
    store = Path(store)
    path = store / LOCK
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StoreError(f"{store}: cannot create the store directory or its lock "
                         f"({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise StoreError(f"{store}: in use by {holder}; wait for it to finish or use "
                             "another directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} ({action})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: name no holder
    finally:
        os.close(fd)
