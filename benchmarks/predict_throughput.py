"""Task 1 generation (``c2np predict``'s sampling) speed, variant against variant in one call; prints a table.

    python benchmarks/predict_throughput.py --store c2np-store --out OUT        # on a GPU
    python benchmarks/predict_throughput.py --store c2np-store --out OUT --cpu-dry-run

For each Task 1 family (untrained weights, seed 0, the bundled config's network and
schedule; with ``--runs``, a trained run's weights where there is one), one batch per row: ``--batch`` particles (default: the config's
``[predict] batch_size``) of one material at R = 10, 20, 30, and ``id``, the first
batch of the ID split in ``c2np predict``'s order (one material's six ID radii and the
next material's first two). The size head is pinned to the true atom counts, so every
variant generates the same atoms.

Variants (``--variants``):

- ``before``: every radius graph built afresh by the cell list at every network call
  (``generate(skin=None)``), the path before the neighbour lists. The other changes
  of the same commit stay on (MatterGen's two guided calls share one graph, noise copied
  to the GPU without a host wait, no per-step ``bincount`` or ``inv`` check): they
  cannot be turned off, so "before" is faster than the earlier code;
- ``verlet``: the default, neighbour lists kept across steps with a 1 A skin
  (``c2np.models.graph.NeighbourList``; the same particles, bit for bit). The row
  reports the plain graphs (atoms moving fast) and lists built per graph asked for;
- ``compile``: ``verlet`` + ``c2np predict --compile`` (the network after the radius
  graph compiled, ``dynamic=True``). Compiled before the timed rows, on two warm-up
  batches of different sizes ("setup s"); "graphs" counts what dynamo compiled during
  the timed rows (0: no recompilation).

Each row runs ``--steps`` sampler steps of the config's schedule shortened to that many
steps (the families' step keys; CDVAE and SyMat: noise levels, ``langevin_steps`` kept),
CUDA synchronised at both ends; "s/batch" is the timed seconds scaled to the config's
full step count (linear in the steps; the neighbour lists rebuild more often on a
shorter schedule, whose steps are larger, so ``verlet`` is if anything understated).
"dev" is the largest difference of the generated positions from ``before``'s (Angstrom;
0 means bit-identical). GPU busy is nvidia-smi's utilization.gpu over the row, "peak GB"
the row's peak of allocated GPU memory; 60 % of the GPU's memory is allocated and freed
once at the start, so that the first rows do not pay for growing the allocator's pool. A row that
fails or passes ``--limit-s`` is reported and the others still run; rows stop when
``--total-s`` is spent. Results: ``OUT/predict_throughput.jsonl`` (one JSON per row,
written as it finishes) and the table in ``OUT/predict_throughput.md``.

``--cpu-dry-run``: every family and variant on one R = 6 particle, 2 steps, with
``--backend aot_eager`` (dynamo without inductor's code generation), so that a GPU call
cannot die on a typo. ``--profile``: a torch.profiler table of one batch per family
(the ``verlet`` path) instead of the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from c2np.models.graph import NeighbourList, reused_neighbours
from c2np.models.registry import build_model, last_stage
from c2np.store.dataset import open_dataset
from c2np.training import data as tdata
from c2np.training.configs import load_training_config
from c2np.training.predict import compile_sampler

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import GpuSampler

#: the costliest samplers of the Table 5 runs first
FAMILIES = ["mattergen", "diffcsp", "flowmm", "cdvae", "symat", "adit"]
VARIANTS = ["before", "verlet", "compile"]
#: the config key that sets the number of sampler steps, per family
STEP_KEY = {"cdvae": "n_sigmas", "symat": "n_sigmas", "diffcsp": "sample_steps", "flowmm": "sample_steps",
            "mattergen": "steps", "adit": "steps"}


class RowTimeout(Exception):
    """A row passed ``--limit-s``."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def stop(*_):
        raise RowTimeout(f"passed {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trained(name: str, runs: str | None, device: torch.device):
    """The model of a ``c2np train`` run of ``name`` under ``runs`` (best.ckpt, else
    last.ckpt of the first ``NAME-task1-seed*``), or None."""
    if not runs:
        return None
    found = sorted(Path(runs).glob(f"{name}-task1-seed*/best.ckpt")) or sorted(Path(runs).glob(f"{name}-task1-seed*/last.ckpt"))
    if not found:
        return None
    from c2np.training.predict import load_module

    return load_module(found[0], str(device)).model.eval()


def make_model(name: str, steps: int, device: torch.device, runs: str | None = None):
    """The family's Task 1 model (seed 0, or the trained one of ``runs``) with its schedule
    shortened to ``steps``; also the full schedule's scale and the predict batch size."""
    cfg = load_training_config(name, 1)
    model = trained(name, runs, device)
    if model is not None:
        if steps:
            raise SystemExit("--runs times the trained models' whole schedules: pass --steps 0")
        return model, 1.0, int(cfg["predict"]["batch_size"])
    params = {k: v for k, v in cfg["model"].items() if k not in ("name", "task")}
    full = int(params[STEP_KEY[name]]) * int(params.get("langevin_steps", 1))
    params[STEP_KEY[name]] = steps = steps or int(params[STEP_KEY[name]])
    torch.manual_seed(0)
    model = last_stage(build_model(name, 1, **params)).to(device).eval()
    return model, full / (steps * int(params.get("langevin_steps", 1))), int(cfg["predict"]["batch_size"])


def pin_sizes(model, batch) -> None:
    """Make the size head predict the true atom counts of ``batch``'s targets."""
    real = type(model).size_and_species

    def pinned(b, cond, lat):
        log_n, logits = real(model, b, cond, lat)
        return b.log_n.to(log_n.dtype), logits

    model.size_and_species = pinned


def cases(ds, radii: list[int], batch_size: int, id_batch: bool):
    """(label, records) of every row: one material at each radius, and the first ID batch."""
    out = []
    for r in radii:
        split = ds.index.loc[ds.index["radius"] == r, "split"].iloc[0]
        rec = tdata.load_records(ds, split, radii=[r], limit=1)[0]
        out.append((f"R={r}", [rec] * batch_size))
    if id_batch:
        out.append(("id", tdata.load_records(ds, "id", limit=batch_size)))
    return out


def sample(model, records, seed: int, skin, device):
    """Generated positions and the neighbour lists' (calls, builds, plain graphs) of one batch."""
    batch = tdata.COLLATE[1]([(r, -1) for r in records]).to(device)
    pin_sizes(model, batch)
    average = getattr(model, "averaged_weights", contextlib.nullcontext)  # FlowMM samples with its EMA
    with torch.no_grad(), average():
        start = model.start_sampling(batch, seed)
        with reused_neighbours(model, skin) as lists:
            x = model.sample_positions(start)
    return x.cpu(), *(sum(getattr(nl, k) for nl in lists) for k in ("calls", "builds", "plain"))


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def run_family(name, variant, ds, args, device, emit, reference: dict) -> None:
    if time.perf_counter() - START > args.total_s:
        emit({"model": name, "variant": variant, "case": "-", "error": "skipped: --total-s spent"})
        return
    model, scale, default_batch = make_model(name, args.steps, device, args.runs)
    size = args.batch or default_batch
    skin = None if variant == "before" else 1.0
    setup, warm = 0.0, cases(ds, [min(args.radii)], 2, False)[0][1]
    t0 = time.perf_counter()
    if variant == "compile":
        torch._dynamo.reset()
        compile_sampler(model, backend=args.backend)
    # untimed: kernels and allocator warm up (compile: a first graph, then the dynamic one)
    for k in (1, 2) if variant == "compile" else (1,):
        sample(model, warm[:k], 0, skin, device)
    sync(device)
    if variant == "compile":
        setup = time.perf_counter() - t0
    for label, records in cases(ds, args.radii, size, not (args.cpu_dry_run or args.no_id_batch)):
        if time.perf_counter() - START > args.total_s:
            emit({"model": name, "variant": variant, "case": label, "error": "skipped: --total-s spent"})
            continue
        row = {"model": name, "variant": variant, "case": label, "graphs_per_batch": len(records),
               "steps_timed": args.steps or "config", "steps_full_scale": scale, "setup_s": setup}
        try:
            with time_limit(args.limit_s), GpuSampler(0) if device.type == "cuda" else contextlib.nullcontext() as util:
                graphs0 = compiled_graphs()
                sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0, c0 = time.perf_counter(), time.process_time()
                x, calls, builds, plain = sample(model, records, 1, skin, device)
                sync(device)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            atoms = len(x)
            ref = reference.setdefault((name, label), x) if variant == "before" else reference.get((name, label))
            row |= {"atoms": atoms, "timed_s": wall, "timed_cpu_s": cpu, "s_per_batch": wall * scale,
                    "particles_per_s": len(records) / (wall * scale), "atoms_per_s": atoms / (wall * scale),
                    "graph_calls": calls, "graph_builds": builds, "graph_plain": plain,
                    "dev_from_before": (float((x - ref).abs().max()) if ref is not None and ref.shape == x.shape
                                        else None),
                    "graphs_compiled": compiled_graphs() - graphs0,
                    "gpu_util": util.mean if util is not None else None,
                    "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
        except (Exception, RowTimeout) as exc:  # noqa: BLE001 - a failing row is reported, the others run
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        emit(row)


def profile(ds, args, device) -> None:
    """torch.profiler of one ``verlet`` batch per family: where a sampler step goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    real = NeighbourList.__call__

    def labelled(self, pos, ptr):
        with torch.profiler.record_function("radius graph (NeighbourList)"):
            return real(self, pos, ptr)

    NeighbourList.__call__ = labelled  # the graph's share of the step, as one row
    for name in args.families.split(","):
        model, _, default_batch = make_model(name, args.steps, device, args.runs)
        records = cases(ds, [min(args.radii)], args.batch or default_batch, False)[0][1]
        sample(model, records, 0, 1.0, device)
        with prof(activities=acts) as p:
            sample(model, records, 1, 1.0, device)
            sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(f"\n## {name}, R = {records[0].radius}, {len(records)} particles, {args.steps} steps\n")
        print(p.key_averages().table(sort_by=key, row_limit=int(args.profile_rows), max_name_column_width=40))
        events = {e.key: e for e in p.key_averages()}
        total = sum(e.self_cpu_time_total for e in events.values())
        graph = events.get("radius graph (NeighbourList)")
        waits = {k: events[k].count for k in ("aten::_local_scalar_dense", "aten::nonzero") if k in events}
        print(f"radius graph: {graph.cpu_time_total / total:.1%} of the CPU time" if graph else "no radius graph",
              f"({graph.count} graphs);" if graph else ";", f"host waits (item, boolean masks): {waits}")


def table(rows: list[dict]) -> str:
    head = ["model", "variant", "case", "atoms", "s/batch", "particles/s", "atoms/s", "CPU s / wall s",
            "graphs plain / lists / calls", "dev (A)", "setup s", "graphs", "GPU busy", "peak GB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, fmt="{:.3g}"):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | {r['case']} | {r['error'][:120]} |" + " |" * (len(head) - 4))
            continue
        lines.append("| " + " | ".join([
            r["model"], r["variant"], r["case"], str(r["atoms"]), f(r["s_per_batch"]), f(r["particles_per_s"]),
            f(r["atoms_per_s"]), f(r["timed_cpu_s"] / r["timed_s"], "{:.2f}"),
            f"{r['graph_plain']} / {r['graph_builds']} / {r['graph_calls']}" if r["graph_calls"] else "",
            f(r["dev_from_before"]), f(r["setup_s"], "{:.1f}") if r["setup_s"] else "", str(r["graphs_compiled"]),
            f(r["gpu_util"], "{:.0f} %"), f(r["peak_mem_gb"], "{:.1f}")]) + " |")
    return "\n".join(lines)


START = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--out", required=True, help="folder for predict_throughput.jsonl and .md")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma list, in the order they run")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--radii", default="10,20,30")
    ap.add_argument("--runs", help="a folder of `c2np train` runs: families with a NAME-task1-seed* run "
                                   "use its trained weights (whole schedule, --steps 0)")
    ap.add_argument("--no-id-batch", action="store_true", help="only the --radii rows, not the first ID batch")
    ap.add_argument("--batch", type=int, default=0, help="particles per batch (default: the config's predict batch)")
    ap.add_argument("--steps", type=int, default=10,
                    help="sampler steps timed (scaled to the config's); 0: the config's whole schedule")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default: torch's; the dry run: 1, which a shared CPU needs)")
    ap.add_argument("--compile-families", default="mattergen,diffcsp,flowmm",
                    help="families that run the compile variant (compiling takes a minute or more each)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend of the compile variant")
    ap.add_argument("--limit-s", type=float, default=90.0, help="seconds one row may take")
    ap.add_argument("--total-s", type=float, default=270.0, help="no row starts after this many seconds")
    ap.add_argument("--cpu-dry-run", action="store_true", help="every family and variant, tiny, on the CPU")
    ap.add_argument("--profile", action="store_true", help="a profiler table per family instead of the rows")
    ap.add_argument("--profile-rows", default="20")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_dry_run else "cpu")
    if args.cpu_dry_run:
        args.radii, args.batch, args.steps, args.total_s, args.limit_s = "6", 1, 2, math.inf, 600.0
        args.threads = args.threads or 1
        args.compile_families = ",".join(FAMILIES)
        if args.backend == "inductor":
            args.backend = "aot_eager"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.radii = [int(r) for r in args.radii.split(",")]
    ds = open_dataset(args.store)
    if args.profile:
        profile(ds, args, device)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        # grow the caching allocator's pool once, so that the first rows do not pay for
        # device allocations that later rows find cached
        torch.empty(int(0.6 * torch.cuda.get_device_properties(0).total_memory), dtype=torch.uint8, device=device)
    rows, reference = [], {}
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    meta = {"device": gpu, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "store": ds.fingerprint, "seed": 0, "steps": args.steps, "backend": args.backend,
            "dry_run": args.cpu_dry_run, "runs": args.runs}
    print(json.dumps(meta))
    with (out / "predict_throughput.jsonl").open("w") as sink:
        def emit(row):
            row = meta | row
            rows.append(row)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k not in meta})

        variants = args.variants.split(",")
        unknown = set(variants) - set(VARIANTS)
        if unknown:
            raise SystemExit(f"unknown variant(s) {sorted(unknown)}; use {', '.join(VARIANTS)}")
        # every family's eager rows first; compiling (a minute or more per family) comes last
        for variant in variants:
            for name in args.families.split(","):
                if variant == "compile" and name not in args.compile_families.split(","):
                    continue
                if variant == "compile" and name == "adit":
                    emit({"model": name, "variant": variant, "case": "-",
                          "error": "not compiled: ADiT's attention splits by graph sizes on the host"})
                    continue
                try:
                    run_family(name, variant, ds, args, device, emit, reference)
                except Exception as exc:  # noqa: BLE001 - a failing variant is reported, the others run
                    traceback.print_exc()
                    emit({"model": name, "variant": variant, "case": "-", "error": f"{type(exc).__name__}: {exc}"})
    text = f"{gpu}, torch {torch.__version__}\n\n{table(rows)}\n"
    (out / "predict_throughput.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
