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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--out", required=True, help="folder of the runs (OUT/fp32, OUT/tf32) and their logs")
    ap.add_argument("--model", default="cdvae")
    ap.add_argument("--task", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--gpus", default="", help="comma-separated GPU indices, one run per GPU at a time; empty: CPU")
    ap.add_argument("--set", action="append", default=[], help="another config override for every run (repeatable)")
    ap.add_argument("--every", type=int, default=5, help="table rows: every N-th epoch and the last")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
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
