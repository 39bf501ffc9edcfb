"""Time to build the full bundled store, and its size.

    python benchmarks/build_store.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from c2np.config import BuildConfig
from c2np.materials.catalogue import load_materials
from c2np.store.build import build_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        materials = load_materials()
        t_load = time.perf_counter() - t0
        s = build_store(Path(tmp) / "store", BuildConfig(), materials, jobs=args.jobs, progress=False)
    rows = [("materials loaded + validated", f"{t_load:.2f} s"),
            (f"build, {args.jobs} processes", f"{s.seconds:.1f} s"),
            ("configurations", f"{s.counts['total']:,}"),
            ("train / id / ood", f"{s.counts['train']:,} / {s.counts['id']:,} / {s.counts['ood']:,}"),
            ("atoms per particle", f"{s.atoms_min:,} - {s.atoms_max:,}"),
            ("store size", f"{s.size_bytes / 2**20:.1f} MiB")]
    width = max(len(k) for k, _ in rows)
    print(f"{'quantity':<{width}}  value\n{'-' * width}  -----")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
