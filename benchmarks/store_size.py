"""Store size against the reference one-XYZ-file-per-configuration layout.

Every atom line of the reference layout is exactly 51 bytes, so the XYZ size is the
atom count times 51 plus the two header lines per file (`c2np.export.estimated_bytes`,
within 1 % of a real export: tests/test_export.py).

    python benchmarks/store_size.py STORE
"""

from __future__ import annotations

import argparse
from pathlib import Path

import c2np
from c2np.export import estimated_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    args = parser.parse_args()
    ds = c2np.open_dataset(args.store)
    store_bytes = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file())
    print(f"{'split':<6} {'configs':>9} {'atom lines':>14} {'XYZ layout (GB)':>16}")
    total = 0
    for split in ("train", "id", "ood"):
        part = ds.split(split)
        size = estimated_bytes(part)
        total += size
        print(f"{split:<6} {len(part):>9,} {int(part.index['n_atoms'].sum()):>14,} {size / 1e9:>16.2f}")
    print(f"\nXYZ layout, all splits: {total / 1e9:.1f} GB in {len(ds):,} files")
    print(f"c2np store:             {store_bytes / 1e6:.1f} MB in "
          f"{sum(1 for p in args.store.rglob('*') if p.is_file())} files")
    print(f"ratio:                  {total / store_bytes:,.0f}x smaller")


if __name__ == "__main__":
    main()
