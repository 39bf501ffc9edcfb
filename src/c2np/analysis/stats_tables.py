"""The tables of ``c2np stats``: assembled from :mod:`c2np.analysis.statistics`, written as
CSV (one tidy file), JSON or Markdown, or drawn in the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from c2np.analysis.statistics import (LATTICE_QUANTITIES, ParticleStatistics, composition_counts,
                                      correlations, describe, lattice_table)

FORMATS = ("csv", "json", "md")


def dataset_tables(materials: pd.DataFrame, particles: ParticleStatistics | None) -> dict[str, pd.DataFrame]:
    """Every table of ``c2np stats``, keyed by section name, in display order."""
    lat = lattice_table(materials)
    tables = {"lattice": describe(lat, LATTICE_QUANTITIES), "correlations": correlations(lat)}
    tables.update(composition_counts(lat))
    if particles is not None:
        tables["per_radius"] = particles.by_radius()
    return tables


def tidy(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All tables as one long frame: section, row, column, value (the CSV layout)."""
    parts = []
    for name, df in tables.items():
        key = df.columns[0]
        long = df.melt(id_vars=[key], var_name="column", value_name="value")
        parts.append(pd.DataFrame({"section": name, "row": long[key].astype(str),
                                   "column": long["column"], "value": long["value"].astype(str)}))
    return pd.concat(parts, ignore_index=True)


def write_tables(tables: dict[str, pd.DataFrame], path: Path, fmt: str) -> Path:
    """Write ``tables`` to ``path`` as csv (tidy), json (section -> records) or md."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        tidy(tables).to_csv(path, index=False)
    elif fmt == "json":
        payload = {name: json.loads(df.to_json(orient="records")) for name, df in tables.items()}
        path.write_text(json.dumps(payload, indent=1) + "\n")
    else:
        blocks = [f"## {name}\n\n{_markdown(df)}\n" for name, df in tables.items()]
        path.write_text("\n".join(blocks))
    return path


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def rich_tables(tables: dict[str, pd.DataFrame]):
    """rich Tables for the terminal. The per-radius table is shown as mean ± std in three
    narrow tables (the files written with --format hold min and max too)."""
    from rich.table import Table

    frames: list[tuple[str, pd.DataFrame]] = []
    for name, df in tables.items():
        if name == "per_radius":
            frames += [(f"per radius: {title}", part) for title, part in _per_radius_compact(df)]
        else:
            frames.append((name.replace("_", " "), df))
    out = []
    for title, df in frames:
        t = Table(title=title)
        for col in df.columns:
            t.add_column(str(col), justify="right" if df[col].dtype.kind in "if" else "left")
        for row in df.itertuples(index=False):
            t.add_row(*(_cell(v) for v in row))
        out.append(t)
    return out


_GROUPS = {
    "size": {"n_atoms": "atoms", "hull_volume": "hull V (A^3)", "hull_volume_cbrt": "V^1/3 (A)"},
    "packing": {"hull_volume_per_atom": "V/N (A^3)", "hull_density": "hull rho (1/A^3)",
                "bbox_density": "box rho (1/A^3)", "surface_fraction": "surface frac"},
    "lengths": {"radius_of_gyration": "R_g (A)", "shortest_distance": "d_min (A)"},
}


def _pm(m: float, s: float) -> str:
    return f"{m:,.0f} ± {s:,.0f}" if abs(m) >= 100 else f"{m:.3g} ± {s:.2g}"


def _per_radius_compact(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for title, cols in _GROUPS.items():
        part = df[["radius", "split"]].copy()
        for q, label in cols.items():
            part[label] = [_pm(m, s) for m, s in zip(df[f"{q}_mean"], df[f"{q}_std"])]
        if title == "size":
            part["atoms min-max"] = [f"{a:,}-{b:,}" for a, b in zip(df["n_atoms_min"], df["n_atoms_max"])]
        if title == "lengths":
            part["d_min min-max"] = [f"{a:.3f}-{b:.3f}" for a, b in
                                     zip(df["shortest_distance_min"], df["shortest_distance_max"])]
        out.append((title, part))
    return out
