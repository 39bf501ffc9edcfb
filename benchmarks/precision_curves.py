"""Does ``train.tf32`` hurt the loss? fp32 and tf32 runs of the same model, task and
seeds, trained side by side; prints their validation-loss curves and compares the tf32
runs' best validation loss with the fp32 runs', using the fp32 seeds' spread as the
yardstick.

    python benchmarks/precision_curves.py --store c2np-store --out OUT --epochs 40 --seeds 0 1 --gpus 0,1,2,3

Each run is ``c2np train`` (CDVAE Task 1 unless ``--model``/``--task`` say otherwise),
with ``--set train.tf32=false`` or ``true``. Every run takes the whole ``--epochs``:
patience is set past them, so the curves have the same length. With ``--gpus``, each run
gets a GPU of its own (``CUDA_VISIBLE_DEVICES``), as many at once as there are GPUs. The
captured step (``train.capture = true``, ``train.compile = "loss"``) is on by default
there; pass ``--set`` to change it. Without ``--gpus`` the runs go one after another on
the CPU. There tf32 changes nothing: both curves must agree, which checks the script.

What it decides: nothing by itself. It prints the difference of the mean best validation
losses (tf32 - fp32) beside the fp32 seeds' range; a difference inside that range is
what "does not hurt the loss" can mean with these few seeds.

Converged runs (``--compare FP32_WORK TF32_WORK``): the work folders of two
``benchmarks/train_baselines.py`` runs of the same plan, one with ``--set train.tf32=true``,
each trained to the convergence rule and scored on the whole test sets. Nothing is
trained. It prints every run (its stop, epochs, best validation loss), then one row per
quantity (the best validation loss, and per split the Loss column and every metric): each
seed's value, the difference of the two precisions' means, the fp32 seeds' range, whether
the difference lies inside it, and whether tf32 is worse than fp32 by more than it in the
metric's own direction. A run that did not converge is listed and left out of every row;
a split without a result counts nowhere. ``--json`` writes the same numbers.

    python benchmarks/precision_curves.py --compare W-fp32 W-tf32 --json cmp.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from c2np.metrics import METRICS

PRECISIONS = ("fp32", "tf32")


def run_command(args, precision: str, seed: int) -> list[str]:
    """The ``c2np train`` command line of one run."""
    sets = [f"train.epochs={args.epochs}", f"train.patience={args.epochs + 1}",
            f"train.tf32={'true' if precision == 'tf32' else 'false'}"]
    if args.gpus:
        sets += ["train.capture=true", "train.compile=loss"]
    sets += args.set
    cmd = [sys.executable, "-m", "c2np", "train", "--task", str(args.task), "--model", args.model,
           "--store", str(args.store), "--out", str(Path(args.out) / precision), "--seed", str(seed), "-q"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_all(args) -> dict[tuple[str, int], Path]:
    """Every (precision, seed) run, one per GPU at a time (or one after another on the
    CPU); their run folders. A failed run raises, naming its log."""
    runs = [(p, s) for s in args.seeds for p in PRECISIONS]
    gpus = [g for g in args.gpus.split(",") if g] if args.gpus else []
    slots = max(len(gpus), 1)
    waiting, running, folders = list(runs), {}, {}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    while waiting or running:
        while waiting and len(running) < slots:
            precision, seed = waiting.pop(0)
            free = [g for g in gpus if g not in {gpu for gpu, _, _ in running.values()}]
            env = dict(os.environ)
            gpu = free[0] if gpus else None
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            log = Path(args.out) / f"{precision}-seed{seed}.log"
            with log.open("w") as sink:  # the child keeps its own copy of the descriptor
                proc = subprocess.Popen(run_command(args, precision, seed), env=env, stdout=sink,
                                        stderr=subprocess.STDOUT)
            running[(precision, seed)] = (gpu, proc, log)
            print(f"  started {precision} seed {seed}" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
        for key, (gpu, proc, log) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del running[key]
            if rc != 0:
                for _, other, _ in running.values():
                    other.terminate()
                raise RuntimeError(f"{key[0]} seed {key[1]} failed (exit {rc}): see {log}")
            folders[key] = Path(args.out) / key[0] / f"{args.model}-task{args.task}-seed{key[1]}"
            print(f"  finished {key[0]} seed {key[1]}", flush=True)
        time.sleep(0.5)
    return folders


def curves(folder: Path) -> list[float]:
    """The validation loss of every epoch of a run."""
    with (folder / "metrics.csv").open() as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f)]


def summary(folders: dict[tuple[str, int], Path]) -> dict:
    """Per precision: best validation losses per seed, their mean and range, seconds per
    epoch; and the tf32 - fp32 difference of the means."""
    out: dict = {}
    for precision in PRECISIONS:
        keys = sorted(k for k in folders if k[0] == precision)
        best = [min(curves(folders[k])) for k in keys]
        info = [json.loads((folders[k] / "run.json").read_text()) for k in keys]
        out[precision] = {"seeds": [k[1] for k in keys], "best_val_loss": best,
                          "mean": sum(best) / len(best), "range": max(best) - min(best),
                          "s_per_epoch": [i.get("time_per_epoch") for i in info],
                          "tf32": [i["config"]["train"].get("tf32") for i in info]}
    out["difference"] = out["tf32"]["mean"] - out["fp32"]["mean"]
    return out


def work_runs(work: Path, model: str, task: int) -> dict[int, Path]:
    """The run folders of ``model`` on ``task`` in a train_baselines work folder, by seed."""
    runs = {}
    for folder in sorted((Path(work) / "runs").glob(f"{model}-task{task}-seed*")):
        seed = folder.name.rsplit("seed", 1)[1]
        if seed.isdigit() and (folder / "run.json").exists():
            runs[int(seed)] = folder
    return runs


def run_numbers(folder: Path, results: Path) -> dict:
    """One converged-and-scored run: its stop, best validation loss, and per test split
    the Loss column and the scored metrics (``{split}/loss``, ``{split}/rmsd``, ...).
    Splits without a result file are missing from the numbers."""
    info = json.loads((folder / "run.json").read_text())
    numbers = {"best_val_loss": info["best_val_loss"]}
    name = folder.name  # MODEL-taskT-seedS
    prefix, seed = name.rsplit("-seed", 1)
    for result in sorted(Path(results).glob(f"{prefix}-*-seed{seed}.json")):
        split = result.name[len(prefix) + 1:-len(f"-seed{seed}.json")]
        if result.name.endswith(".partial.json") or not split:
            continue
        data = json.loads(result.read_text())
        if data.get("loss") is not None:
            numbers[f"{split}/loss"] = data["loss"]
        numbers |= {f"{split}/{k}": v for k, v in data["metrics"].items() if isinstance(v, (int, float))}
    return {"converged": bool(info.get("converged")), "stop_reason": info.get("stop_reason"),
            "epochs": info.get("epochs"), "best_epoch": info.get("best_epoch"),
            "tf32": info["config"]["train"].get("tf32"), "device": info.get("device"), "numbers": numbers}


def better_when(quantity: str) -> str | None:
    """"lower" or "higher" for a quantity of :func:`run_numbers` (``best_val_loss``,
    ``id/loss``, ``ood/rmsd``, ...), from the metric registry; None for one without a
    direction (the volume ratio)."""
    name = quantity.split("/")[-1]
    if name in ("best_val_loss", "loss"):
        return "lower"
    info = METRICS.get(name)
    if info is None or name == "volume_ratio":
        return None
    return "lower" if info.lower_is_better else "higher"


def compare(works: dict[str, Path], model: str, task: int) -> dict:
    """fp32 against tf32 over converged, scored runs: per run its numbers; per quantity the
    means of each precision (converged runs only), tf32 - fp32, the fp32 seeds' range,
    whether the difference lies within it and whether tf32 is worse by more than it (in
    the quantity's own direction, :func:`better_when`)."""
    runs = {p: {s: run_numbers(f, Path(works[p]) / "results") for s, f in work_runs(works[p], model, task).items()}
            for p in PRECISIONS}
    for p, want in zip(PRECISIONS, (False, True)):
        if not runs[p]:
            raise SystemExit(f"no {model} task {task} runs in {works[p]}/runs")
        wrong = [s for s, r in runs[p].items() if bool(r["tf32"]) != want]
        if wrong:
            raise SystemExit(f"{works[p]}: seeds {wrong} were trained with tf32={not want}, not as {p}")
    quantities = sorted({q for p in PRECISIONS for r in runs[p].values() for q in r["numbers"]},
                        key=lambda q: (q != "best_val_loss", q.split("/")[0], q != q.split("/")[0] + "/loss", q))
    table = {}
    for q in quantities:
        vals = {p: [r["numbers"][q] for r in runs[p].values() if r["converged"] and q in r["numbers"]]
                for p in PRECISIONS}
        if not all(vals.values()):
            continue
        mean = {p: sum(v) / len(v) for p, v in vals.items()}
        spread = max(vals["fp32"]) - min(vals["fp32"])
        diff = mean["tf32"] - mean["fp32"]
        judged = len(vals["fp32"]) > 1
        direction = better_when(q)
        worse = {"lower": diff > spread, "higher": -diff > spread, None: None}[direction]
        table[q] = {"fp32": vals["fp32"], "tf32": vals["tf32"], "fp32_mean": mean["fp32"],
                    "tf32_mean": mean["tf32"], "difference": diff, "fp32_range": spread,
                    "better": direction, "within_range": abs(diff) <= spread if judged else None,
                    "worse_beyond_range": worse if judged else None}
    return {"model": model, "task": task, "works": {p: str(w) for p, w in works.items()}, "runs": runs,
            "quantities": table}


def print_compare(res: dict) -> None:
    """The runs, then one row per quantity."""
    print("| precision | seed | stop | epochs | best val. loss (epoch) | device |")
    print("|---|---|---|---|---|---|")
    for p in PRECISIONS:
        for seed, r in sorted(res["runs"][p].items()):
            print(f"| {p} | {seed} | {r['stop_reason']} | {r['epochs']} | "
                  f"{r['numbers']['best_val_loss']:.4f} ({r['best_epoch']}) | {r['device']} |")
    print("\n| quantity | better | fp32 (each seed) | tf32 (each seed) | tf32 - fp32 (means) | fp32 seeds' range "
          "| inside the range | tf32 worse beyond it |")
    print("|---|---|---|---|---|---|---|---|")
    word = {True: "yes", False: "no", None: "-"}
    for q, row in res["quantities"].items():
        worse = "**yes**" if row["worse_beyond_range"] else word[row["worse_beyond_range"]]
        print(f"| {q} | {row['better'] or '-'} | {', '.join(f'{v:.4g}' for v in row['fp32'])} | "
              f"{', '.join(f'{v:.4g}' for v in row['tf32'])} | {row['difference']:+.3g} | {row['fp32_range']:.3g} | "
              f"{word[row['within_range']]} | {worse} |")
    rows = list(res["quantities"].values())
    judged = [r for r in rows if r["within_range"] is not None]
    directed = [r for r in judged if r["worse_beyond_range"] is not None]
    print(f"\n{sum(r['within_range'] for r in judged)} of {len(judged)} differences lie inside the fp32 seeds' "
          f"range; tf32 is worse by more than that range in {sum(r['worse_beyond_range'] for r in directed)} of "
          f"{len(directed)} with a direction"
          + (f"; {len(rows) - len(judged)} not judged (one fp32 seed)" if len(judged) < len(rows) else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("FP32_WORK", "TF32_WORK"),
                    help="compare converged, scored runs of two train_baselines.py work folders; trains nothing")
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--out", help="folder of the runs (OUT/fp32, OUT/tf32) and their logs")
    ap.add_argument("--model", default="cdvae")
    ap.add_argument("--task", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--gpus", default="", help="comma-separated GPU indices, one run per GPU at a time; empty: CPU")
    ap.add_argument("--set", action="append", default=[], help="another config override for every run (repeatable)")
    ap.add_argument("--every", type=int, default=5, help="table rows: every N-th epoch and the last")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    if args.compare:
        res = compare(dict(zip(PRECISIONS, args.compare)), args.model, args.task)
        print_compare(res)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return
    if not args.out:
        ap.error("--out is required unless --compare is given")
    t0, cpu0 = time.perf_counter(), time.process_time()
    folders = run_all(args)
    table = {k: curves(v) for k, v in sorted(folders.items())}
    n = max(len(c) for c in table.values())
    cols = list(table)
    print("\n| epoch | " + " | ".join(f"{p} seed {s}" for p, s in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for e in range(n):
        if e % args.every == 0 or e == n - 1:
            print(f"| {e} | " + " | ".join(f"{table[k][e]:.4f}" if e < len(table[k]) else "-" for k in cols) + " |")
    res = summary(folders)
    print()
    for p in PRECISIONS:
        r = res[p]
        print(f"{p}: best validation loss {', '.join(f'{b:.4f}' for b in r['best_val_loss'])} "
              f"(mean {r['mean']:.4f}, range {r['range']:.4f}); s/epoch "
              f"{', '.join(f'{t:.2f}' for t in r['s_per_epoch'] if t is not None)}")
    print(f"tf32 - fp32 mean best validation loss: {res['difference']:+.4f} (fp32 seeds' range "
          f"{res['fp32']['range']:.4f}); {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - cpu0:.0f} s CPU of this process (the runs are subprocesses)")
    if args.json:
        Path(args.json).write_text(json.dumps(res | {"epochs": args.epochs, "store": str(args.store)}, indent=1))


if __name__ == "__main__":
    main()
