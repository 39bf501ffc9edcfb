"""Shared pieces of the ``c2np`` command line: the Typer apps, consoles and option types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from c2np.errors import C2NPError

CLI_HELP = 'Typical session::\n\n    c2np build                    # build the benchmark store in ./c2np-store (about a minute)\n    c2np info c2np-store          # counts per split, atoms, size\n    c2np verify c2np-store        # re-hash every file against the manifest\n    c2np export xyz c2np-store out/ --materials LiBeH3 --radii 10'

app = typer.Typer(help=CLI_HELP, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
export_app = typer.Typer(help="Write configurations as files (XYZ reference layout or extended XYZ).",
                         no_args_is_help=True)
materials_app = typer.Typer(help="The bundled unit cells: list them, or recompute them.",
                            no_args_is_help=True)
app.add_typer(export_app, name="export")
app.add_typer(materials_app, name="materials")
# Markup off: messages carry paths, keys and values from the user ("x[/b]", "[red]"),
# which rich would otherwise eat or choke on; styles are passed as style=, never inline.
# soft_wrap: a long one-line error stays one line in logs and pipes (no 80-column wrap).
console = Console(markup=False, soft_wrap=True)
err = Console(stderr=True, markup=False, soft_wrap=True)

DEFAULT_STORE = Path("c2np-store")
StoreArg = Annotated[Path, typer.Argument(help="Store directory.")]
MaterialsOpt = Annotated[Optional[str], typer.Option(
    "--materials", "-m", help="Comma-separated material names (default: all).")]
RadiiOpt = Annotated[Optional[str], typer.Option(
    "--radii", "-r", help="Radii in Angstrom: '10,11' or ranges '6-9,30' (default: all).")]
SplitOpt = Annotated[Optional[str], typer.Option(
    "--split", "-s", help="Comma-separated splits: train, id, ood (default: all).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
TaskOpt = Annotated[int, typer.Option(help="1: unit cell + R -> particle; 2: particle -> lattice + space group.")]
EvalSplitOpt = Annotated[str, typer.Option(help="id or ood (train also accepted).")]
StoreOpt = Annotated[Path, typer.Option(help="The dataset store.")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (default: all cores).")]


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def parse_radii(text: str | None) -> list[int] | None:
    """Parse '6-9,30' into [6, 7, 8, 9, 30]."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"cannot read radius {part!r}; use e.g. 10,11 or 6-9") from None
    return sorted(set(out))


def fail_line(message: str) -> None:
    """Print ``error: message`` on stderr as one unwrapped line, text taken literally."""
    err.print(Text.assemble(("error: ", "bold red"), " ".join(str(message).split())))


def _fail(exc: C2NPError) -> None:
    fail_line(str(exc))
    raise typer.Exit(2)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _print_summary(s) -> None:
    t = Table(title=f"C2NP store {s.store}", show_header=True)
    t.add_column("split")
    t.add_column("configurations", justify="right")
    for k in ("train", "id", "ood", "total"):
        t.add_row(k, f"{s.counts[k]:,}")
    console.print(t)
    console.print(f"atoms per particle: {s.atoms_min:,} to {s.atoms_max:,}; "
                  f"symmetric duplicates: {s.duplicates:,}; store size: {_size(s.size_bytes)}")
    if s.up_to_date:
        console.print("store was already built with this configuration: nothing to do")
    else:
        console.print(f"built in {s.seconds:.1f} s ({s.reused} materials reused from an earlier run)")

