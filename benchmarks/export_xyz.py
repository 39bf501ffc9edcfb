"""XYZ export: c2np against the authors' reference writer, side by side in one run.

    python benchmarks/export_xyz.py STORE                              # c2np only
    python benchmarks/export_xyz.py STORE --reference PATH/TO/C2NP     # both, plus a byte diff
    python benchmarks/export_xyz.py STORE --reference ... --materials LiBeH3 --repeats 3

PATH/TO/C2NP is a checkout of the authors' repository (KurbanIntelligenceLab/C2NP; it
needs numpy, scipy and tqdm). Its writer reads one XYZ file per (material, R) and writes
every rotation; this script gives it the store's canonical particles (written with 17
significant digits, so it reads back the store's exact float64 positions) and the
store's CIFs, runs `create_c2np` in a subprocess (its default 4 worker processes), runs
`c2np export xyz` on the same selection (``--jobs`` processes), alternating, and then
compares the two folders byte for byte. Times are wall clock and CPU (user + system of
the process and its children), median over ``--repeats``.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import c2np
from c2np.export import export_xyz

MATERIALS = ["KMgH3", "LiBeH3", "NaMgH3", "LiAlH3", "ZrCdH3"]


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w0, _cpu() - c0


def _raw_input(ds, folder: Path) -> None:
    """The reference writer's input: materials/{M}_R{r}.xyz and cifs/{M}.cif."""
    (folder / "materials").mkdir(parents=True)
    (folder / "cifs").mkdir()
    for (m, r), _ in ds.index.groupby(["material", "radius"], sort=True):
        atoms = ds.canonical(m, int(r))
        lines = [f"{len(atoms)}", f"{m} R{r}"] + [
            f"{s} {x!r} {y!r} {z!r}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions.tolist())]
        (folder / "materials" / f"{m}_R{int(r)}.xyz").write_text("\n".join(lines) + "\n")
    for m in sorted(ds.index["material"].unique()):
        shutil.copyfile(ds.store / "cifs" / f"{m}.cif", folder / "cifs" / f"{m}.cif")


def _run_reference(reference: Path, raw: Path, out: Path) -> None:
    code = ("import sys; from create_c2np.create_c2np import create_c2np; "
            f"sys.exit(0 if create_c2np({str(raw)!r}, {str(out)!r}) else 1)")
    subprocess.run([sys.executable, "-c", code], cwd=reference, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"})


def _compare(a: Path, b: Path) -> tuple[int, int, int]:
    """(files in both with equal bytes, files that differ, files in only one)."""
    fa = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    common = sorted(fa & fb)
    same = sum(filecmp.cmp(a / p, b / p, shallow=False) for p in common)
    return same, len(common) - same, len(fa ^ fb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--materials", default=",".join(MATERIALS))
    parser.add_argument("--radii", default=None, help="e.g. 10,20 (default: all radii)")
    parser.add_argument("--reference", type=Path, default=None, help="checkout of the authors' repository")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep the last outputs in this folder")
    args = parser.parse_args()
    ds = c2np.open_dataset(args.store).filter(
        materials=args.materials.split(","),
        radii=[int(r) for r in args.radii.split(",")] if args.radii else None)
    lines = int(ds.index["n_atoms"].sum())
    print(f"{len(ds):,} configurations, {lines:,} atom lines ({args.materials}; "
          f"radii {args.radii or 'all'}); {os.cpu_count()} cores; c2np --jobs {args.jobs}")
    times: dict[str, list[tuple[float, float]]] = {"c2np": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.reference:
            _raw_input(ds, tmp / "raw")
        for i in range(args.repeats):
            for name in (("reference", "c2np") if args.reference else ("c2np",)):
                out = tmp / f"{name}-out"
                shutil.rmtree(out, ignore_errors=True)
                if name == "c2np":
                    times[name].append(_timed(lambda o=out: export_xyz(ds, o, progress=False, jobs=args.jobs)))
                else:
                    times[name].append(_timed(lambda o=out: _run_reference(args.reference, tmp / "raw", o)))
                print(f"  run {i + 1} {name:<9}: {times[name][-1][0]:7.1f} s wall, "
                      f"{times[name][-1][1]:7.1f} s CPU", flush=True)
        size = sum(p.stat().st_size for p in (tmp / "c2np-out").rglob("*") if p.is_file())
        print(f"\n{'writer':<10} {'wall s':>8} {'CPU s':>8} {'files/s':>9} {'MB/s':>7}")
        for name, runs in times.items():
            if runs:
                wall = statistics.median(w for w, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                print(f"{name:<10} {wall:>8.1f} {cpu:>8.1f} {len(ds) / wall:>9.0f} {size / 1e6 / wall:>7.1f}")
        if args.reference:
            ref = [statistics.median(x[k] for x in times["reference"]) for k in (0, 1)]
            ours = [statistics.median(x[k] for x in times["c2np"]) for k in (0, 1)]
            print(f"speed-up: {ref[0] / ours[0]:.1f}x wall, {ref[1] / ours[1]:.1f}x CPU")
            same, differ, only = _compare(tmp / "reference-out", tmp / "c2np-out")
            print(f"byte comparison: {same:,} identical files, {differ:,} differ, {only:,} in one folder only")
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(tmp, args.keep, ignore=shutil.ignore_patterns("raw"))


if __name__ == "__main__":
    main()
