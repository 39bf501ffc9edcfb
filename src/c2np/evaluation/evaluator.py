"""The Evaluator: official scores for a task and split, from predictions to a result JSON.

>>> ev = Evaluator(task=2, split="ood", store="c2np-store")
>>> ev.targets()                      # what to predict (config ids and inputs)
>>> result = ev.evaluate("my_predictions.csv", model="MyNet", seed=0)
>>> ev.save(result, "results/mynet-task2-ood-seed0.json")
>>> result, scores = ev.evaluate_with_scores("my_predictions.csv")   # + one row per sample
>>> r = ev.evaluate("t1.parquet", resume="t1-id.json")   # Task 1: keeps scored rows in t1-id.json.chunks/
>>> ev.save(r, "t1-id.json")                              # ... until the result is saved
"""

from __future__ import annotations

import faulthandler
import json
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd

import c2np
from c2np.errors import C2NPError
from c2np.evaluation import predictions as P
from c2np.metrics import METRICS
from c2np.metrics.alignment import UNMATCHED_PENALTY
from c2np.metrics.lattice import Tolerances, task2_metrics, task2_sample_scores
from c2np.metrics.structure import COINCIDENT_DISTANCE, VALID_MIN_DISTANCE, crowding, task1_metrics
from c2np.progress import imap_with_progress
from c2np.store.dataset import Dataset, open_dataset
from c2np.store.layout import atomic_write, atomic_write_text, sha256_file
from c2np.tasks.targets import LATTICE_COLUMNS, task1_samples, task2_targets
from c2np.training.chunks import MANIFEST, ChunkFolder, chunk_dir

RESULT_FORMAT = "c2np-result"
#: A Task 1 prediction may hold at most this many times its target's atoms, or
#: MIN_ATOM_LIMIT if larger; bigger ones are refused before scoring (a 10^6-atom prediction
#: would need terabytes). The floor matters for small targets: the template reference row
#: predicts R = 6 with the R = 8 particle, up to 3x the atoms, and a few hundred atoms
#: cost nothing to score.
MAX_ATOM_FACTOR = 2
MIN_ATOM_LIMIT = 20_000
_T1_KEYS = ["rmsd", "hausdorff", "hull_volume_error", "volume_ratio", "volume_ratio_error",
            "rdf_error", "lev_error", "atom_count_error"]
#: A resumed Task 1 scoring keeps its finished samples in files of this many rows: small
#: enough that a call cut off loses little, large enough that a split is a few dozen files.
ROWS_PER_CHUNK = 16


#: A Task 1 sample still being scored after this many seconds says so on stderr, and a
#: second later its process's stacks follow: one stuck sample holds back every row after it
#: (they are kept in order), and a call cut off at a deadline otherwise leaves no clue which
#: one it was or where (2026-11-27: scipy's sparse matching on a crowded FlowMM particle).
SLOW_SAMPLE_S = 300.0


def _report_slow(cid: int, seconds: float) -> None:
    print(f"scoring task 1: config_id {cid} still running after {seconds:g} s", file=sys.stderr, flush=True)


def _stack_file():
    """Where faulthandler can write: it needs a file descriptor, which a captured stderr
    (a test's, a CLI runner's) lacks; then the process's own stderr, if it has one."""
    for f in (sys.stderr, sys.__stderr__):
        try:
            f.fileno()
            return f
        except (AttributeError, OSError, ValueError):
            continue
    return None


def _score_task1(args):
    cid, pred_z, pred_pos, ref_z, ref_pos = args
    # The line needs the GIL, which a C routine may hold for minutes; faulthandler's
    # watchdog does not, so the stacks come in any case.
    watch = threading.Timer(SLOW_SAMPLE_S, _report_slow, (cid, SLOW_SAMPLE_S))
    watch.daemon = True
    watch.start()
    if (stacks := _stack_file()) is not None:
        faulthandler.dump_traceback_later(SLOW_SAMPLE_S + 1, file=stacks)
    try:
        with warnings.catch_warnings():
            # A symmetric particle has several optimal rotations; scipy warns, but each gives
            # the same RMSD, so the warning tells the user nothing (it used to leak through -q).
            warnings.filterwarnings("ignore", message="Optimal rotation is not uniquely")
            return cid, task1_metrics(pred_pos, pred_z, ref_pos, ref_z)
    finally:
        faulthandler.cancel_dump_traceback_later()
        watch.cancel()


class Evaluator:
    """Scores predictions for ``task`` (1 or 2) on ``split`` ("id" or "ood", or "train").

    ``sample_per_group=k`` scores a seeded subset (Task 1: k materials per radius; Task 2:
    k configurations per (material, R)); ``materials`` keeps only those materials. Both
    are recorded in the result's ``sample``; every target of the (sub)set needs a prediction.

    On a store of the ``materials`` split scheme (docs/splits.md) ``split`` may also be
    ``unseen_id``, ``unseen_ood`` or ``unseen_train``: the held-out materials at ID, OOD
    or training radii. The scheme is recorded in every result, and reports never put
    results of two schemes in one table.
    """

    expected_input_format = {
        1: "Parquet rows (config_id, Z or symbol, x, y, z) or extended XYZ frames with "
           "config_id=<int>; one particle per config_id of Evaluator.targets()",
        2: "CSV or Parquet with columns config_id, a, b, c, alpha, beta, gamma, spacegroup; "
           "one row per config_id of Evaluator.targets()",
    }
    expected_output_format = ("dict: task, split, split_scheme, n_samples, metrics (overall), per_radius, "
                              "tolerances (Task 2), certificate and validity (Task 1), "
                              "store_fingerprint (SHA-256 over the store files as read), store_verified, "
                              "build_fingerprint (config + unit cells), c2np_version, model, seed, seconds; "
                              "resumed_samples (Task 1 with resume, when samples came from an earlier call)")

    def __init__(self, task: int, split: str, store: str | Path | Dataset = "c2np-store",
                 tolerances: Tolerances = Tolerances(), sample_per_group: int | None = None,
                 sample_seed: int = 0, materials: list[str] | None = None):
        if task not in (1, 2):
            raise C2NPError(f"task must be 1 or 2, got {task}")
        self.task, self.split, self.tol = task, split, tolerances
        if sample_per_group is not None and (isinstance(sample_per_group, bool)
                                             or int(sample_per_group) != sample_per_group
                                             or sample_per_group < 1):
            raise C2NPError(f"sample must be a positive integer (samples per group), got {sample_per_group}")
        self.ds = store if isinstance(store, Dataset) else open_dataset(store)
        try:
            self.ds.check_split(split)
        except ValueError as exc:
            raise C2NPError(str(exc)) from None
        self._targets = (task1_samples(self.ds, split) if task == 1 else task2_targets(self.ds, split))
        self.sample = None
        if materials is not None:
            # A documented subset: only these materials, every radius of the split.
            for m in materials:
                self.ds.check_material(m)
            self._targets = self._targets[self._targets["material"].isin(materials)].reset_index(drop=True)
        if sample_per_group is not None and task == 1:
            # A documented random subset: k materials at every radius.
            groups = self._targets.groupby("radius", sort=False)
            k = min(int(sample_per_group), int(groups.size().min()))
            self._targets = (groups.sample(n=k, random_state=sample_seed)
                             .sort_values("config_id").reset_index(drop=True))
            self.sample = {"per_radius": int(sample_per_group), "seed": int(sample_seed)}
        elif sample_per_group is not None:
            # A documented random subset: k configurations of every (material, R).
            groups = self._targets.groupby(["material", "radius"], sort=False)
            k = min(int(sample_per_group), int(groups.size().min()))
            self._targets = (groups.sample(n=k, random_state=sample_seed)
                             .sort_values("config_id").reset_index(drop=True))
            self.sample = {"per_material_radius": int(sample_per_group), "seed": int(sample_seed)}
        if materials is not None:
            self.sample = {**(self.sample or {}), "materials": sorted(materials)}

    def targets(self) -> pd.DataFrame:
        """The samples to predict: config_id, material, radius (+ targets for Task 2)."""
        return self._targets.copy()

    def _header(self, model: str | None, seed: int | None) -> dict:
        return {"format": RESULT_FORMAT, "task": self.task, "split": self.split,
                "split_scheme": self.ds.split_scheme, "model": model, "seed": seed,
                "n_samples": len(self._targets), "sample": self.sample,
                "store_fingerprint": self.ds.fingerprint, "store_verified": self.ds.verified,
                "build_fingerprint": self.ds.manifest["fingerprint"],
                "c2np_version": c2np.__version__}

    def evaluate(self, predictions, model: str | None = None, seed: int | None = None,
                 jobs: int = 1, progress: bool = False, extra: dict | None = None,
                 resume: str | Path | None = None) -> dict:
        """Validate and score ``predictions`` (a path, a DataFrame or {config_id: Atoms})."""
        return self.evaluate_with_scores(predictions, model, seed, jobs, progress, extra, resume)[0]

    def evaluate_with_scores(self, predictions, model: str | None = None, seed: int | None = None,
                             jobs: int = 1, progress: bool = False, extra: dict | None = None,
                             resume: str | Path | None = None) -> tuple[dict, pd.DataFrame]:
        """:meth:`evaluate`, and the per-sample scores behind its means: one row per target
        (config_id, material, radius, then Task 1's metrics of that particle, or Task 2's
        per-sample errors and checks, :func:`~c2np.metrics.lattice.task2_sample_scores`).
        A split's mean can hide one failed sample among hundreds; these rows show which.

        ``resume`` (Task 1, predictions from a file): the result file being made. Every
        ``ROWS_PER_CHUNK`` finished samples are kept in ``RESUME.chunks/``, and a later call
        with the same predictions (SHA-256), store, split and sample scores only the samples
        still missing; the result equals that of one uninterrupted call (the same rows, summed
        in the same order), with ``resumed_samples`` saying how many came from earlier calls
        and ``seconds`` this call's time. :meth:`save` to ``resume`` removes the folder, once
        the result is on disk (a kill between the two loses nothing). Task 2 scores a split
        in seconds and ignores it."""
        start = time.perf_counter()
        ids = self._targets["config_id"].to_numpy()
        if self.task == 2:
            frame = P.read_task2(predictions, ids)
            result, scores = self._task2(frame)
        else:
            where = "predictions" if isinstance(predictions, dict) else str(predictions)
            rows = None
            if resume is not None:
                if isinstance(predictions, (dict, pd.DataFrame)):
                    raise C2NPError("resume needs predictions read from a file (its SHA-256 names the scoring)")
                rows = self._rows_folder(Path(predictions), Path(resume))
            result, scores = self._task1(P.read_task1(predictions, ids), jobs, progress, where, rows)
        out = self._header(model, seed)
        out.update(result)
        out["seconds"] = round(time.perf_counter() - start, 3)
        out.update(extra or {})
        return out, scores

    def _rows_folder(self, predictions: Path, resume: Path) -> ChunkFolder:
        n = len(self._targets)
        return ChunkFolder(resume, {
            "task": self.task, "split": self.split, "sample": self.sample, "store": self.ds.fingerprint,
            "predictions_sha256": sha256_file(predictions), "c2np_version": c2np.__version__,
            "rows_per_batch": ROWS_PER_CHUNK, "batches": -(-n // ROWS_PER_CHUNK), "samples": n},
            command="evaluate")

    def _task2(self, frame: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
        t = self._targets
        pred, ref = frame[LATTICE_COLUMNS].to_numpy(float), t[LATTICE_COLUMNS].to_numpy(float)
        sg_pred, sg_ref = frame["spacegroup"].to_numpy(), t["spacegroup"].to_numpy()
        overall = task2_metrics(pred, ref, sg_pred, sg_ref, self.tol)
        per_radius = {}
        for r, rows in t.groupby("radius").indices.items():
            per_radius[str(int(r))] = task2_metrics(pred[rows], ref[rows], sg_pred[rows], sg_ref[rows], self.tol)
        scores = pd.DataFrame({"config_id": t["config_id"].to_numpy(), "material": t["material"].to_numpy(),
                               "radius": t["radius"].to_numpy(),
                               **task2_sample_scores(pred, ref, sg_pred, sg_ref, self.tol),
                               "spacegroup_pred": sg_pred, "spacegroup_ref": sg_ref})
        return ({"metrics": overall, "per_radius": per_radius,
                 "tolerances": {"length_rtol": self.tol.length_rtol, "angle_atol_deg": self.tol.angle_atol}},
                scores)

    def _task1(self, preds: dict, jobs: int, progress: bool, where: str,
               folder: ChunkFolder | None = None) -> tuple[dict, pd.DataFrame]:
        t = self._targets
        work = []
        for row in t.itertuples():
            ref = self.ds.canonical(row.material, int(row.radius))
            z, pos = preds[int(row.config_id)]
            if len(z) > max(MAX_ATOM_FACTOR * len(ref), MIN_ATOM_LIMIT):
                raise P.PredictionError(
                    f"{where}: config_id {row.config_id}: {len(z):,} predicted atoms for a {len(ref):,}-atom "
                    f"target; at most {MAX_ATOM_FACTOR}x the target's atoms or {MIN_ATOM_LIMIT:,}, whichever "
                    "is larger, are scored (the assignment is quadratic in the atom count)")
            work.append((int(row.config_id), z, pos, ref.numbers, ref.positions))
        # Largest particles first, one at a time: a worker that draws a slow sample last
        # no longer leaves the other idle (a 4-sample chunk of R = 26 took 2-3 s). The
        # rows go back to target order, so every mean sums in the same order as before.
        order = sorted(range(len(work)), key=lambda i: -(len(work[i][1]) + len(work[i][3])))
        rows: list = [None] * len(work)
        # with a rows folder, the scoring order is cut into chunks of ROWS_PER_CHUNK samples:
        # those finished by an earlier call are read back, the others scored and kept
        chunks = [order[k:k + ROWS_PER_CHUNK] for k in range(0, len(order), ROWS_PER_CHUNK)]
        finished = folder.open() if folder is not None else set()
        for b in sorted(finished):
            kept = pd.read_parquet(folder.path(b)).to_dict("records")
            for i, row in zip(chunks[b], kept):
                cid = int(row.pop("config_id"))
                if cid != work[i][0]:
                    raise C2NPError(f"{folder.folder}: chunk {b} holds config_id {cid} where {work[i][0]} belongs; "
                                    "remove the folder to score afresh")
                rows[i] = (cid, row)
        todo = [i for b, chunk in enumerate(chunks) if b not in finished for i in chunk]
        done = imap_with_progress(_score_task1, [work[i] for i in todo], len(work), "scoring task 1",
                                  jobs, progress, 1, start=len(work) - len(todo))
        chunk_of = {i: k // ROWS_PER_CHUNK for k, i in enumerate(order)}
        pending = []
        # strict: the generator is run to its end (the bar's last line, the pool's shutdown)
        for i, res in zip(todo, done, strict=True):
            rows[i] = res
            if folder is None:
                continue
            pending.append(res)
            b = chunk_of[i]
            if len(pending) == len(chunks[b]):
                frame = pd.DataFrame([{"config_id": cid, **m} for cid, m in pending])
                atomic_write(folder.path(b), lambda tmp: frame.to_parquet(tmp, index=False))
                pending = []
        # crowding outside the scored rows: cheap (one k-d tree a particle), and chunks an
        # older version kept on a resumed scoring lack it
        scores = (pd.DataFrame([{"config_id": cid, **m, **crowding(w[2])} for (cid, m), w in zip(rows, work)])
                  .merge(t, on="config_id"))
        per_radius = {str(int(r)): _mean(g) for r, g in scores.groupby("radius")}
        first = ["config_id", "material", "radius"]
        scores = scores[first + [c for c in scores.columns if c not in first]]
        resumed = {"resumed_samples": len(work) - len(todo)} if finished else {}
        return {**resumed, "metrics": _mean(scores), "per_radius": per_radius,
                "certificate": _certificate(scores), "validity": _validity(scores),
                "definitions": {"rdf": "g(r), 0-6 A, 0.05 A bins", "lev_cutoff_A": 3.0,
                                "rmsd_unmatched_penalty_A": UNMATCHED_PENALTY,
                                "volume_ratio": "hull volume / (4/3 pi r^3), r = largest atom distance from the centroid",
                                "alignment": "see docs/metrics.md"}}, scores

    @staticmethod
    def save(result: dict, path: str | Path) -> None:
        """Write a result as JSON (creating parent folders)."""
        path = Path(path)
        if path.is_dir():
            raise C2NPError(f"{path}: is a directory; give a file name for the result JSON")
        try:
            text = json.dumps(result, indent=1, sort_keys=True, allow_nan=False) + "\n"
        except ValueError:
            raise C2NPError(f"{path}: the result holds NaN or infinite values, which JSON "
                            "cannot store; check the predictions") from None
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise C2NPError(f"{path}: cannot write the result ({exc.strerror})") from None
        _drop_scored_rows(path)


def _drop_scored_rows(path: Path) -> None:
    """Remove PATH.chunks/ when it holds the rows of a resumed scoring of this result (not,
    say, a prediction's batches): they are in the saved result now."""
    rows = chunk_dir(path)
    try:
        manifest = json.loads((rows / MANIFEST).read_text())
    except (OSError, ValueError):
        return
    if isinstance(manifest, dict) and "rows_per_batch" in manifest:
        shutil.rmtree(rows, ignore_errors=True)


def write_scores(scores: pd.DataFrame, path: str | Path) -> None:
    """Write :meth:`Evaluator.evaluate_with_scores`'s per-sample rows (Parquet or CSV by suffix)."""
    try:
        P.write_table(Path(path), scores)
    except OSError as exc:
        raise C2NPError(f"{path}: cannot write the per-sample scores ({exc.strerror})") from None


def _mean(frame: pd.DataFrame) -> dict:
    return {k: float(frame[k].mean()) for k in _T1_KEYS}


def _certificate(scores: pd.DataFrame) -> dict:
    """How the RMSD optima of a split were established (docs/metrics.md, Certificate)."""
    return {"assignment_exact_fraction": float(scores["assignment_exact"].mean()),
            "exact_embedding_fraction": float(scores["exact_embedding"].mean()),
            "hypotheses_min": int(scores["hypotheses"].min()),
            "refined_min": int(scores["refined"].min()),
            "refined_mean": float(scores["refined"].mean()),
            "best_reached_twice_fraction": float((scores["best_hits"] >= 2).mean()),
            "degenerate_fraction": float(scores["degenerate"].mean())}


def _validity(scores: pd.DataFrame) -> dict:
    """How many predicted particles are physically possible (docs/metrics.md, Validity)."""
    d = scores["min_distance"]
    return {"min_distance_A": VALID_MIN_DISTANCE, "valid_fraction": float((d >= VALID_MIN_DISTANCE).mean()),
            "close_atom_fraction": float(scores["close_atom_fraction"].mean()),
            "coincident_A": COINCIDENT_DISTANCE, "coincident_fraction": float((d < COINCIDENT_DISTANCE).mean())}


def load_result(path: str | Path) -> dict:
    """Read a result JSON and check it is one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise C2NPError(f"{path}: not a readable result JSON ({exc})") from exc
    if data.get("format") != RESULT_FORMAT:
        raise C2NPError(f"{path}: not a c2np result (format {data.get('format')!r})")
    unknown = set(data.get("metrics", {})) - set(METRICS)
    if unknown:
        raise C2NPError(f"{path}: unknown metrics {sorted(unknown)}")
    return data
