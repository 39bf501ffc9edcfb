"""The finished batches of a ``c2np predict --resume`` call, kept on disk.

A lent GPU machine stops a call after at most 10 minutes, and Task 1 sampling of a whole
split can take longer; a prediction held in memory until its end was lost with the call.
With ``--resume`` every batch is written as it finishes, and the next call (possibly on
another machine, with the folder carried over) generates only the batches still missing::

    OUT.chunks/
      manifest.json        what is being predicted: task, split, seed, batch size, number
                           of batches, checkpoint SHA-256, store fingerprint, options
      batch-00000.parquet  the predictions of batch 0, in the final file's format
      batch-00001.parquet  ...

When every batch is there they are joined into OUT in batch order and the folder removed.
Several processes may fill one folder at once, each its own shard of the batches
(``c2np predict --shard K/N``: batches b with b mod N = K, :func:`shard_batches`), on
different GPUs of one machine; :meth:`ChunkFolder.locked` serialises their set-up and the
join, so that exactly one of them, the last to finish, writes OUT.
``c2np evaluate --resume`` keeps the per-sample rows of a Task 1 scoring the same way, in
``RESULT.chunks/`` (c2np.evaluation.evaluator).
This module needs no PyTorch, so that scripts can read a folder's progress cheaply.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from c2np.errors import C2NPError
from c2np.store.layout import atomic_write_text, is_temporary, temporary_target

MANIFEST = "manifest.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` as (K, N), with 0 <= K < N; ValueError naming the expected form otherwise."""
    k, sep, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/2 and 1/2 for two processes")
    return shard


def shard_batches(batches: int, shard: tuple[int, int] | None) -> set[int]:
    """The batches of ``shard`` = (K, N) among ``batches``: b mod N = K (None: all of them).

    Interleaved rather than in blocks: a split's batches come in the store's order, where the
    particle sizes cycle with the radius, so every shard gets a like mix of small and large."""
    if shard is None:
        return set(range(batches))
    k, n = shard
    return set(range(k, batches, n))


def chunk_dir(out: Path) -> Path:
    """The folder that holds the finished batches of the prediction file ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".chunks")


def _manifest(out: Path) -> dict | None:
    """The manifest of a prediction of ``out`` in progress, else None (no folder, or a
    manifest cut off by a kill)."""
    try:
        manifest = json.loads((chunk_dir(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _manifest_int(out: Path, key: str) -> int | None:
    """``key`` of the manifest of a prediction of ``out`` in progress, else None (no folder,
    a manifest cut off by a kill, or no such key)."""
    try:
        return int((_manifest(out) or {})[key])
    except (ValueError, KeyError, TypeError):
        return None


def chunk_progress(out: Path) -> tuple[int, int] | None:
    """(batches finished, batches in all) of a prediction of ``out`` in progress, else None."""
    total = _manifest_int(out, "batches")
    if total is None:
        return None
    return len(ChunkFolder(out, {"batches": total}).finished()), total


def chunk_missing(out: Path, shard: tuple[int, int] | None = None) -> set[int] | None:
    """The batches of ``shard`` (None: of all) still missing from a prediction of ``out`` in
    progress, else None (no folder)."""
    total = _manifest_int(out, "batches")
    if total is None:
        return None
    return shard_batches(total, shard) - ChunkFolder(out, {"batches": total}).finished()


def chunk_batch_size(out: Path) -> int | None:
    """The batch size of a prediction of ``out`` in progress (its manifest's), else None.

    A resumed prediction must keep it: the batches on disk were cut at that size."""
    return _manifest_int(out, "batch_size")


def chunk_attention(out: Path) -> str | None:
    """The attention precision (``c2np predict --attention``) of a prediction of ``out`` in
    progress: its manifest's, "fp32" where the manifest names none; None without one.

    A resumed prediction must keep it: ``--resume`` refuses to mix precisions."""
    manifest = _manifest(out)
    return None if manifest is None else str(manifest.get("attention", "fp32"))


class ChunkFolder:
    """``OUT.chunks/`` of one prediction, identified by ``manifest`` (which must hold
    ``batches``, the number of batches). Callers write each batch file atomically (a
    temporary, then a rename), so a file that exists is a finished batch."""

    def __init__(self, out: Path, manifest: dict, command: str = "predict") -> None:
        self.folder = chunk_dir(out)
        self.manifest = dict(manifest)
        self.batches = int(manifest["batches"])
        #: the c2np command whose batches these are, for the message of a refused folder
        self.command = command

    def path(self, b: int) -> Path:
        """The file of batch ``b``."""
        return self.folder / f"batch-{b:05d}.parquet"

    def finished(self) -> set[int]:
        """The batches whose files exist."""
        return {b for b in range(self.batches) if self.path(b).is_file()}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock (``flock``) on the folder's parent directory.

        The shards of one prediction take it to set the folder up and to join it: without
        it, two shards starting at once would each create the folder afresh, and two
        finishing at once would both join it while one removes it. The parent is locked,
        not the folder, because the folder may not exist yet and is removed at the join."""
        import fcntl  # POSIX only: imported here so that reading a folder's progress needs none

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def open(self, mine: set[int] | None = None) -> set[int]:
        """Prepare the folder and return the batches already finished.

        The batches of an earlier call are kept when its manifest matches this one; a
        folder of another prediction is refused (C2NPError naming the first differing key)
        and left as it is. Temporaries of a write cut off by a kill are removed; with
        ``mine`` (the batches of this process's shard), only those of these batches, as
        another shard may be writing its own at this moment.
        """
        saved = self.folder / MANIFEST
        if saved.exists():
            try:
                before = json.loads(saved.read_text())
            except ValueError as exc:
                raise C2NPError(f"{saved}: unreadable manifest ({exc}); remove {self.folder} to start over") from None
            for key in [*self.manifest, *(k for k in before if k not in self.manifest)]:
                if before.get(key) != self.manifest.get(key):
                    raise C2NPError(
                        f"{self.folder}: holds batches of another "
                        f"{'prediction' if self.command == 'predict' else 'scoring'} ({key} {before.get(key)!r} "
                        f"there, {self.manifest.get(key)!r} now); remove the folder, or {self.command} "
                        "without --resume")
            ours = None if mine is None else {self.path(b).name for b in mine}
            for tmp in self.folder.iterdir():
                if is_temporary(tmp.name) and (ours is None or temporary_target(tmp.name) in ours):
                    tmp.unlink(missing_ok=True)
            return self.finished()
        self.remove()
        self.folder.mkdir(parents=True)
        atomic_write_text(saved, json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
        return set()

    def remove(self) -> None:
        """Delete the folder (the prediction is complete, or starts over)."""
        shutil.rmtree(self.folder, ignore_errors=True)
