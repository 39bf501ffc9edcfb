"""Store size against the reference one-XYZ-file-per-configuration layout.

The XYZ size is measured exactly on a random sample of configurations (formatted in
memory, as `c2np export xyz` writes them) and scaled by atom count to the whole split.

    python benchmarks/store_size.py STORE [--sample 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import c2np
from c2np.export import atom_lines, reference_comment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args()
    ds = c2np.open_dataset(args.store)
    store_bytes = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    print(f"{'split':<6} {'configs':>9} {'atom lines':>14} {'XYZ layout (GB)':>16}")
    total = 0.0
    for split in ("train", "id", "ood"):
        part = ds.split(split)
        pick = rng.choice(len(part), min(args.sample, len(part)), replace=False)
        sample_bytes = sample_atoms = 0
        for i in pick:
            a = part[int(i)]
            text = (f"{len(a)}\n{reference_comment(a.info['radius'], a.info['rotation_id'], np.array(a.info['quaternion_xyzw']))}\n"
                    + atom_lines(a.numbers, a.positions))
            sample_bytes += len(text.encode())
            sample_atoms += len(a)
        atoms = int(part.index["n_atoms"].sum())
        est = sample_bytes / sample_atoms * atoms
        total += est
        print(f"{split:<6} {len(part):>9,} {atoms:>14,} {est / 1e9:>16.2f}")
    print(f"\nXYZ layout, all splits: {total / 1e9:.1f} GB in {len(ds):,} files")
    print(f"c2np store:             {store_bytes / 1e6:.1f} MB in "
          f"{sum(1 for p in args.store.rglob('*') if p.is_file())} files")
    print(f"ratio:                  {total / store_bytes:,.0f}x smaller")


if __name__ == "__main__":
    main()
