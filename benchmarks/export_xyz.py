"""XYZ export throughput (atom lines per second, MB/s) on 5 materials.

    python benchmarks/export_xyz.py STORE [--radii 10,20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import c2np
from c2np.export import export_extxyz, export_xyz

MATERIALS = ["KMgH3", "LiBeH3", "NaMgH3", "LiAlH3", "ZrCdH3"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    parser.add_argument("--radii", default="10,20")
    args = parser.parse_args()
    radii = [int(r) for r in args.radii.split(",")]
    ds = c2np.open_dataset(args.store).filter(materials=MATERIALS, radii=radii)
    lines = int(ds.index["n_atoms"].sum())
    print(f"{len(ds):,} configurations, {lines:,} atom lines ({', '.join(MATERIALS)}; R = {radii})")
    print(f"{'format':<8} {'seconds':>8} {'lines/s':>12} {'MB/s':>8} {'MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, run, target in (("xyz", export_xyz, Path(tmp) / "xyz"),
                                  ("extxyz", export_extxyz, Path(tmp) / "all.extxyz")):
            t0 = time.perf_counter()
            run(ds, target, progress=False)
            dt = time.perf_counter() - t0
            mb = _size(target) / 1e6
            print(f"{name:<8} {dt:>8.2f} {lines / dt:>12,.0f} {mb / dt:>8.1f} {mb:>8.1f}")


if __name__ == "__main__":
    main()
