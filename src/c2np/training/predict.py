"""``c2np predict``: a trained run's predictions in the harness's file formats, so learned
models are scored by exactly the code that scores the reference solvers."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ase import Atoms

from c2np.errors import C2NPError
from c2np.evaluation.predictions import task1_frame, write_task1, write_task2
from c2np.models.adit import DiTBlock
from c2np.models.components import SchNetEncoder
from c2np.models.cspnet import ParticleCSPNet
from c2np.models.graph import DEFAULT_SKIN
from c2np.models.mattergen import MatterGenTask1
from c2np.progress import progress_bar
from c2np.store.dataset import Dataset, open_dataset
from c2np.store.layout import atomic_write_text, sha256_file
from c2np.tasks.targets import LATTICE_COLUMNS
from c2np.training.chunks import ChunkFolder, chunk_dir, shard_batches
from c2np.training.data import COLLATE, load_records, record_loader, task1_ids

#: per network class, its method that ``c2np predict --compile`` compiles: the part after
#: the radius graph, whose shapes do not depend on the data
SAMPLER_NETWORKS = {SchNetEncoder: "interact", ParticleCSPNet: "propagate", MatterGenTask1: "network"}

#: ``c2np predict --attention``: the precision of the attention kernels while a Task 1
#: transformer (ADiT) generates; None keeps the model's own (fp32)
ATTENTION_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def test_loss_path(run: Path, split: str) -> Path:
    """Where ``c2np predict`` leaves the test-split objective of a run (one file per split)."""
    return Path(run) / f"test_loss-{split}.json"


def settings_path(run: Path, split: str) -> Path:
    """Where ``c2np predict`` leaves how a run's complete prediction of ``split`` was made
    (``c2np evaluate --run-info`` carries it into the result as ``model_run.prediction``)."""
    return Path(run) / f"prediction-{split}.json"


def write_test_loss(module, records, split: str, checkpoint: Path, batch_size: int, seed: int,
                    checkpoint_sha256: str | None = None) -> dict:
    """The model's own objective on every (material, R) of ``records`` (canonical orientation,
    seeded noise), written next to the checkpoint for ``c2np evaluate --run-info``."""
    from c2np.training.module import mean_objective

    task = module.model.task
    loader = record_loader(task, [(r, -1) for r in records], [len(r.numbers) for r in records],
                           batch_size, False, seed)
    was_training = module.model.training
    module.model.eval()
    terms = mean_objective(module.model, (b.to(module.device) for b in loader), seed)
    module.model.train(was_training)
    out = {"split": split, "loss": terms.pop("loss"), "graphs": int(terms.pop("graphs")), "terms": terms,
           "checkpoint": checkpoint.name, "seed": seed, "batch_size": batch_size,
           "checkpoint_sha256": checkpoint_sha256 or sha256_file(checkpoint)}
    atomic_write_text(test_loss_path(checkpoint.parent, split), json.dumps(out, indent=1) + "\n")
    return out


def _test_loss_done(checkpoint: Path, split: str, digest: str, seed: int, graphs: int, batch_size: int) -> bool:
    """Whether ``test_loss-{split}.json`` already holds this checkpoint's loss at this seed."""
    try:
        saved = json.loads(test_loss_path(checkpoint.parent, split).read_text())
    except (OSError, ValueError):
        return False
    return (saved.get("checkpoint_sha256"), saved.get("seed"), saved.get("graphs"),
            saved.get("batch_size")) == (digest, seed, graphs, batch_size)


def load_module(checkpoint: Path, device: str | None = None):
    """The Lightning module of a run, on ``device`` (default: CUDA when present)."""
    from c2np.training.module import BaselineModule

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module = BaselineModule.load_from_checkpoint(str(checkpoint), map_location=device)
    return module.eval().to(device)


def _batches(records, size: int):
    for i in range(0, len(records), size):
        yield records[i:i + size]


def generate_particles(model, device, chunk, seed: int, skin: float | None = DEFAULT_SKIN) -> pd.DataFrame:
    """Task 1: one generated particle per (record, config_id) of ``chunk`` (with ``model`` on
    ``device``, sampler seed ``seed``, neighbour lists of ``skin``; None: none), as the rows
    of the prediction file (:func:`~c2np.evaluation.predictions.task1_frame`)."""
    batch = COLLATE[1]([(r, -1) for r, _ in chunk]).to(device)
    made = model.generate(batch, seed=seed, skin=skin)
    return task1_frame({cid: Atoms(numbers=z, positions=pos) for (_, cid), (z, pos) in zip(chunk, made)})


def _predict_lattices(model, device, chunk, size: int, seed: int, all_rotations: bool) -> pd.DataFrame:
    """Task 2: one row per configuration of the records of ``chunk``."""
    rows = []
    items = ([(r, k) for r in chunk for k in range(len(r.config_ids))] if all_rotations
             else [(r, -1) for r in chunk])
    for p, part in enumerate(_batches(items, size)):
        lat, sg = model.predict(COLLATE[2](part).to(device), seed=seed * 1009 + p)
        lat, sg = lat.cpu().numpy().astype(np.float64), sg.cpu().numpy()
        for (rec, k), l6, s in zip(part, lat, sg):
            # rotation-invariant model: the canonical prediction holds for every rotation
            ids = rec.config_ids if k < 0 else rec.config_ids[k:k + 1]
            rows += [(int(c), *l6, int(s)) for c in ids]
    return pd.DataFrame(rows, columns=["config_id", *LATTICE_COLUMNS, "spacegroup"])


def compile_sampler(model: torch.nn.Module, backend: str = "inductor") -> list[str]:
    """``torch.compile`` (``dynamic=True``) the network of a Task 1 sampler in place, for
    ``c2np predict --compile``; returns the compiled methods' names.

    Only the part after the radius graph is compiled (``SAMPLER_NETWORKS``): the graph's
    size depends on the data, the network's shapes are then symbols, so after the first
    batches no batch size compiles again (dynamo's counters, tests/test_sampling.py).
    Duck shaping is turned off (process-wide) as in ``compile_loss``: it would tie a
    batch of 3 graphs to the xyz axis and recompile for every other batch size. ADiT's
    transformer splits its attention by the graphs' sizes on the host and stays eager.
    """
    from torch.fx.experimental import _config as fx_config

    fx_config.use_duck_shape = False
    done = []
    for module in model.modules():
        name = SAMPLER_NETWORKS.get(type(module))
        if name is not None:
            setattr(module, name, torch.compile(getattr(module, name), backend=backend, dynamic=True))
            done.append(f"{type(module).__name__}.{name}")
    return done


@contextmanager
def attention_precision(model: torch.nn.Module, attention: str):
    """Within the block, every :class:`~c2np.models.adit.DiTBlock` of ``model`` runs its
    attention kernels in ``attention`` (a key of :data:`ATTENTION_DTYPES`); afterwards
    they are as before, so the test Loss is never computed in it."""
    blocks = [m for m in model.modules() if isinstance(m, DiTBlock)]
    before = [b.attention_dtype for b in blocks]
    for b in blocks:
        b.attention_dtype = ATTENTION_DTYPES[attention]
    try:
        yield
    finally:
        for b, dtype in zip(blocks, before):
            b.attention_dtype = dtype


def predict(checkpoint: Path, store: str | Path | Dataset, split: str, out: Path, seed: int = 0,
            all_rotations: bool = False, batch_size: int | None = None, limit: int | None = None,
            sample: int | None = None, progress: bool = True, resume: bool = False,
            compile: bool = False, skin: float = DEFAULT_SKIN,
            shard: tuple[int, int] | None = None, attention: str = "fp32") -> Path | None:
    """Write the predictions of ``checkpoint`` for ``split`` to ``out``.

    Task 1: ``out`` is a long-format Parquet (config_id, Z, x, y, z), one generated
    particle per (material, R). Task 2: CSV or Parquet with one row per configuration.
    The model's own loss on the split's (material, R) records goes to
    ``test_loss-{split}.json`` beside the checkpoint (the report's Loss column).
    ``limit`` keeps the first (material, R) records only (partial files are rejected by
    the evaluator, so this is for smoke tests). ``sample`` (Task 1) keeps the evaluator's
    seeded subset of k materials per radius.

    ``resume``: write every finished batch to ``OUT.chunks/`` (:mod:`c2np.training.chunks`)
    and skip the batches an earlier call of the same prediction left there (a different
    checkpoint, split, seed, batch size or store is refused); the test loss is not
    recomputed when its file holds this checkpoint, seed and batch size. Batch ``b`` is
    always drawn with seed ``seed * 100003 + b``, so ``out`` is byte-identical to that of
    an uninterrupted call, with or without ``resume``.

    ``shard`` = (K, N), with ``resume``: generate only batches b with b mod N = K, so that N
    processes (on different GPUs) share one prediction, each writing its batches into the
    same ``OUT.chunks/``. The one that finds every batch there when it ends joins them into
    ``out`` (the bits do not depend on the sharding, since batch b's seed does not); the
    others return None. Shard 0 writes the test loss. An ``out`` that exists without a chunk
    folder counts as joined by another shard and is returned as it is.

    ``compile`` (Task 1): :func:`compile_sampler`. Compiled kernels round differently
    from eager ones, so the particles differ from eager's in the last bits (and more,
    where a nearest-neighbour cap or a species draw flips); the chunk manifest records
    the setting and ``--resume`` refuses to mix the two. ``skin`` (Task 1, Angstrom): the
    sampler's neighbour lists (``c2np.models.graph.NeighbourList``); 0 builds every radius
    graph afresh. The particles are the same bits either way.

    ``attention`` (Task 1, ADiT): ``"bf16"`` generates with the transformer's attention
    kernels in bfloat16 (:func:`attention_precision`; q, k, v cast, fp32 everywhere else),
    the flash kernels on a GPU's tensor cores instead of fp32's memory-efficient ones. The
    particles differ from fp32's (a 100-step flow amplifies the rounding), so the manifest
    records it and ``--resume`` refuses to mix the two; the test Loss stays fp32.
    """
    if attention not in ATTENTION_DTYPES:
        raise C2NPError(f"attention {attention!r}: choose one of {', '.join(ATTENTION_DTYPES)}")
    checkpoint, out = Path(checkpoint), Path(out)
    if shard is not None:
        if not resume:
            raise C2NPError("--shard needs --resume: the shards meet in OUT.chunks/")
        if out.exists() and not chunk_dir(out).exists():
            return out  # another shard joined the batches already
    module = load_module(checkpoint)
    model, device = module.model, module.device
    task = model.task
    if attention != "fp32" and not (task == 1 and any(isinstance(m, DiTBlock) for m in model.modules())):
        raise C2NPError(f"attention {attention}: applies to the generation of a Task 1 transformer (ADiT), not to "
                        f"{type(model).__name__} (Task {task})")
    if compile and task == 1:
        compile_sampler(model)
    # the config's [predict] batch size; checkpoints of before it was kept: the training one
    size = int(batch_size or (module.hparams.get("predict") or {}).get("batch_size")
               or module.hparams.train.get("batch_size", 8))
    ds = store if isinstance(store, Dataset) else open_dataset(store)
    every = records = load_records(ds, split, limit=limit)
    if sample is not None and task == 1:
        from c2np.evaluation.evaluator import Evaluator

        keep = set(Evaluator(1, split, ds, sample_per_group=sample).targets()[["material", "radius"]]
                   .itertuples(index=False, name=None))
        records = [r for r in records if (r.material, r.radius) in keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = sha256_file(checkpoint)
    batches = list(_batches(list(zip(records, task1_ids(ds, split, records))) if task == 1 else records, size))
    chunks = ChunkFolder(out, {"task": task, "split": split, "seed": seed, "batch_size": size,
                               "batches": len(batches), "checkpoint_sha256": digest, "store": ds.fingerprint,
                               "limit": limit, "sample": sample, "all_rotations": all_rotations}
                         # only when on: folders of eager calls from before the option still resume
                         | ({"compile": True} if compile and task == 1 else {})
                         | ({"attention": attention} if attention != "fp32" else {}))
    mine = shard_batches(len(batches), shard)
    if resume:
        with chunks.locked():  # another shard may be setting the folder up at this moment
            if shard is not None and out.exists() and not chunks.folder.exists():
                return out
            done = chunks.open(mine if shard is not None else None)  # before the test loss: a refusal costs nothing
    else:
        done = set()

    def test_loss() -> None:
        if not (resume and _test_loss_done(checkpoint, split, digest, seed, len(every), size)):
            write_test_loss(module, every, split, checkpoint, size, seed, digest)  # whole split, also with --sample

    if shard is None or shard[0] == 0:
        test_loss()
    parts = {}
    label = f"predict task {task} {split}, batches of {size}" + (f", shard {shard[0]}/{shard[1]}" if shard else "")
    with progress_bar(len(mine), label, enabled=progress, start=len(done & mine)) as advance, \
            attention_precision(model, attention):
        for b, chunk in enumerate(batches):
            if b in done or b not in mine:
                continue
            if task == 1:
                part = generate_particles(model, device, chunk, seed * 100003 + b, skin if skin > 0 else None)
            else:
                part = _predict_lattices(model, device, chunk, size, seed * 100003 + b, all_rotations)
            if resume:  # atomic writes: a kill leaves finished batches only
                (write_task1 if task == 1 else write_task2)(chunks.path(b), part)
            else:
                parts[b] = part
            advance()
    settings = chunks.manifest | {"file": out.name, "attention": attention, "skin": skin if task == 1 else None,
                                  "shards": shard[1] if shard else 1}
    if shard is None:
        return _join(chunks, out, task, parts if not resume else None, settings, checkpoint.parent)
    with chunks.locked():  # the last shard to finish joins; exactly one sees them all
        if not chunks.folder.exists():
            return out  # another shard joined them while this one finished its last batch
        if len(chunks.finished()) < chunks.batches:
            return None
        test_loss()  # shard 0 wrote it unless its call was cut off before
        return _join(chunks, out, task, None, settings, checkpoint.parent)


def _join(chunks: ChunkFolder, out: Path, task: int, parts: dict[int, pd.DataFrame] | None,
          settings: dict, run: Path) -> Path:
    """Write ``out`` from every batch (``parts``, or the chunk files when None), in batch
    order (both tasks' batches are rows of the final table), then ``settings`` (how it was
    made: the chunk manifest and the rest) to :func:`settings_path` in ``run``, and remove
    the chunk folder."""
    if parts is None:
        parts = {b: pd.read_parquet(chunks.path(b)) for b in range(chunks.batches)}
    (write_task1 if task == 1 else write_task2)(out, pd.concat([parts[b] for b in range(chunks.batches)],
                                                               ignore_index=True))
    atomic_write_text(settings_path(run, settings["split"]), json.dumps(settings, indent=1, sort_keys=True) + "\n")
    chunks.remove()  # OUT is complete; an earlier call's batches are obsolete too
    return out
