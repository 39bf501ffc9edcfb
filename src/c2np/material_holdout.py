"""Material-held-out splits: stratified folds over materials (the ``materials`` scheme).

The paper's splits are by radius only, so every test material is also a training
material and memorising 81 lattices solves Task 2. The ``materials`` scheme holds out
one of ``folds`` fixed folds of materials: every configuration of a held-out material is
test data (``unseen_train``, ``unseen_id``, ``unseen_ood`` by radius), the rest keep the
paper's splits.

Folds are computed from the materials table (``materials.csv`` rows) at build time, so
they follow the cells actually built, never a hard-coded list:

* materials are visited stratum by stratum (space groups, largest first), each stratum
  in an order drawn from ``numpy.random.default_rng(seed)``;
* each goes to the fold with the fewest materials of its space group, then of its A-site
  species, then the fewest materials overall (then the lowest fold number), which spreads
  every space group and every A-site species evenly over the folds;
* a fold may take a material only while at least one other material of the same space
  group and of the same A-site species stays outside that fold, so that every test space
  group and A-site species also occurs in training. A material no fold can take (the only
  one of its space group or A-site species) is always training data: fold ``-1``.

With 81 materials and 5 folds every fold holds 16 or 17 materials (about 20 %).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from c2np.config import BuildConfig

#: Fold of materials that are never held out.
ALWAYS_TRAIN = -1


def material_folds(table: pd.DataFrame, folds: int, seed: int) -> dict[str, int]:
    """Fold of every material of ``table`` (columns name, spacegroup_number, A).

    Deterministic in (table content, folds, seed); the row order of ``table`` does not
    matter. An empty A column (user CIFs) stratifies by space group alone.
    """
    table = table.sort_values("name").reset_index(drop=True)
    names = table["name"].astype(str).tolist()
    group = dict(zip(names, table["spacegroup_number"].astype(int)))
    site_a = dict(zip(names, table["A"].fillna("").astype(str)))
    n_group, n_a = Counter(group.values()), Counter(site_a.values())
    draw = np.random.default_rng(seed).permutation(len(names))
    order = sorted(range(len(names)), key=lambda i: (-n_group[group[names[i]]], group[names[i]], draw[i]))
    per_group = [Counter() for _ in range(folds)]
    per_a = [Counter() for _ in range(folds)]
    size = [0] * folds
    out = {}
    for i in order:
        m = names[i]
        g, a = group[m], site_a[m]
        allowed = [f for f in range(folds)
                   if per_group[f][g] + 1 < n_group[g] and per_a[f][a] + 1 < n_a[a]]
        if not allowed:
            out[m] = ALWAYS_TRAIN
            continue
        f = min(allowed, key=lambda f: (per_group[f][g], per_a[f][a], size[f], f))
        per_group[f][g] += 1
        per_a[f][a] += 1
        size[f] += 1
        out[m] = f
    return out


def heldout_materials(table: pd.DataFrame, cfg: BuildConfig) -> list[str]:
    """Names of the materials ``cfg`` holds out (sorted; empty for the ``radius`` scheme)."""
    if cfg.split_scheme != "materials":
        return []
    folds = material_folds(table, cfg.material_folds, cfg.material_seed)
    return sorted(m for m, f in folds.items() if f == cfg.material_fold)


def unseen_split(split: str) -> str:
    """The split of a held-out material's configuration whose radius is in ``split``."""
    return f"unseen_{split}"


def holdout_table(materials: pd.DataFrame, cfg: BuildConfig) -> pd.DataFrame:
    """Per material of a materials-scheme store: space group, A, B, fold and held out or not."""
    if cfg.split_scheme != "materials":
        raise ValueError(f"split scheme {cfg.scheme_name} holds out no materials "
                         "(build with --split-scheme materials)")
    folds = material_folds(materials, cfg.material_folds, cfg.material_seed)
    out = materials[["name", "spacegroup_symbol", "spacegroup_number", "A", "B"]].copy()
    out["fold"] = out["name"].map(folds)
    out["heldout"] = out["fold"] == cfg.material_fold
    return out.sort_values(["heldout", "spacegroup_number", "name"], ascending=[False, True, True],
                           ignore_index=True)
