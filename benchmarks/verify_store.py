"""What the integrity check on open costs: ``open_dataset(verify=True)`` against
``verify=False``, and the SHA-256 pass alone, on one store.

Runs are interleaved (verified, unverified, hash only) and repeated; the table gives the
median wall and CPU time of each. The page cache is warm after the first run, which is
how a store is normally re-opened.

    python benchmarks/verify_store.py STORE [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import c2np
from c2np.store.manifest import check_store


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    size = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file())
    cases = {"open_dataset(verify=True)": lambda: c2np.open_dataset(args.store),
             "open_dataset(verify=False)": lambda: c2np.open_dataset(args.store, verify=False),
             "SHA-256 check alone": lambda: check_store(args.store)}
    for fn in cases.values():  # warm the page cache and imports
        fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            times[name].append(_timed(fn))
    print(f"store {args.store}: {size / 1e6:.1f} MB, {len(check_store(args.store).digests)} files, "
          f"median of {args.repeat}")
    print(f"{'what':<28} {'wall (ms)':>10} {'CPU (ms)':>10}")
    for name, runs in times.items():
        print(f"{name:<28} {statistics.median(w for w, _ in runs):>10.1f} "
              f"{statistics.median(c for _, c in runs):>10.1f}")


if __name__ == "__main__":
    main()
