"""Task 1 sampling speed: the neighbour lists kept across sampler steps give the cell
list's edges (set and order) and therefore the same samples; ``c2np predict --compile``
compiles the sampler's network once for every batch size and is never mixed with eager
batches by ``--resume``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2np.errors import C2NPError
from c2np.models.graph import NeighbourList, radius_edges, reused_neighbours
from c2np.models.registry import build_model
from c2np.training.chunks import ChunkFolder
from c2np.training.configs import load_training_config
from c2np.training.data import COLLATE

#: every Task 1 family whose sampler builds radius graphs (ADiT's transformer has none)
GRAPH_FAMILIES = ["cdvae", "symat", "diffcsp", "flowmm", "mattergen"]
TINY = {"hidden": 16, "layers": 1, "blocks": 1, "interactions": 1, "edge_freq": 4, "gaussians": 8,
        "max_neighbors": 8, "cutoff": 4.0, "sample_steps": 3, "steps": 3, "n_sigmas": 2, "langevin_steps": 2}


def tiny(name: str, **extra):
    cfg = load_training_config(name, 1)["model"]
    params = {k: v for k, v in cfg.items() if k not in ("name", "task")}
    torch.manual_seed(0)
    return build_model(name, 1, **(params | {k: v for k, v in TINY.items() if k in params} | extra)).eval()


def trajectory(steps: int = 24):
    """Two particles of 120 and 180 atoms in a 9 A box under annealed noise (a sampler's
    path: large moves first, small ones last)."""
    gen = torch.Generator().manual_seed(5)
    x = (torch.rand(300, 3, generator=gen) - 0.5) * 9
    ptr = torch.tensor([0, 120, 300])
    for sigma in torch.exp(torch.linspace(np.log(0.6), np.log(0.005), steps)).tolist():
        x = x + sigma * torch.randn(x.shape, generator=gen)
        yield x, ptr


def test_neighbour_list_gives_the_cell_lists_edges_along_a_trajectory():
    ordered, unordered = NeighbourList(3.0, skin=0.8), NeighbourList(3.0, skin=0.8, ordered=False)
    ptr = None
    for x, p in trajectory():
        ptr = p if ptr is None else ptr  # the same tensor every step, as in a sampler
        want = radius_edges(x, ptr, 3.0)
        assert torch.equal(ordered(x, ptr), want)
        got = unordered(x, ptr)
        assert torch.equal(torch.sort(got[1] * 300 + got[0]).values, torch.sort(want[1] * 300 + want[0]).values)
    # plain graphs while the atoms move a lot, a list kept once they move little
    counts = (ordered.plain, ordered.builds, ordered.calls)
    assert ordered.plain > 1 and ordered.builds >= 1 and ordered.plain + ordered.builds < ordered.calls - 5, counts
    assert (unordered.plain, unordered.builds) == (ordered.plain, ordered.builds)


def test_neighbour_list_rebuilds_for_other_atoms_and_refuses_no_skin():
    lists = NeighbourList(3.0)
    (x, ptr), = [next(trajectory())]
    lists(x, ptr)
    lists(x, ptr)  # not moved: a list is built
    lists(x[:200], torch.tensor([0, 120, 200]))
    assert (lists.plain, lists.builds) == (2, 1)
    with pytest.raises(ValueError, match="skin"):
        NeighbourList(3.0, skin=0.0)


@pytest.mark.parametrize("name", GRAPH_FAMILIES)
def test_samples_are_identical_with_reused_neighbour_lists(records, name):
    """The default sampler (neighbour lists) against graphs built afresh at every step:
    bit-identical species and positions."""
    model = tiny(name)
    batch = COLLATE[1]([(r, -1) for r in records[:2]])
    fresh = model.generate(batch, seed=3, skin=None)
    reused = model.generate(batch, seed=3)
    for (z0, x0), (z1, x1) in zip(fresh, reused, strict=True):
        assert np.array_equal(z0, z1) and np.array_equal(x0, x1)
    with reused_neighbours(model) as lists:
        model.sample_positions(model.start_sampling(batch, seed=3))
    assert lists and sum(nl.calls for nl in lists) > 0
    assert all(m.neighbours is None for m in model.modules() if hasattr(m, "neighbours"))


@pytest.mark.slow  # dynamo's tracing: 30-60 s per family on the 2-core dev machine, shared
@pytest.mark.parametrize("name", ["diffcsp", "mattergen", "cdvae"])
def test_compiled_sampler_does_not_recompile_across_batches(records, name):
    """``predict --compile`` on dynamo's graph level (backend aot_eager: dynamo's guards and
    recompilations, without inductor's minutes of C++ code generation): after the warm-up
    batches, batches of other sizes compile nothing, nothing breaks the graph, and the
    samples equal eager's to 1e-5."""
    from torch._dynamo.utils import counters

    from c2np.training.predict import compile_sampler

    torch._dynamo.reset()
    counters.clear()
    model = tiny(name)
    pool = records * 3
    batches = [COLLATE[1]([(r, -1) for r in pool[:k]]) for k in (2, 3, 1, 5, 4)]
    eager = [model.generate(b, seed=1) for b in batches]
    assert compile_sampler(model, backend="aot_eager")
    graphs = []
    for b, want in zip(batches, eager):
        got = model.generate(b, seed=1)
        for (z0, x0), (z1, x1) in zip(want, got, strict=True):
            assert np.array_equal(z0, z1)
            np.testing.assert_allclose(x1, x0, rtol=1e-5, atol=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[2] == graphs[-1], graphs
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.slow  # inductor's C++ code generation: minutes on the 2-core dev machine
@pytest.mark.parametrize("name", ["diffcsp", "mattergen"])
def test_inductor_sampler_network_matches_eager_per_step(records, name):
    """One network call of the sampler, inductor against eager: 1e-5 relative."""
    from c2np.training.predict import compile_sampler

    torch._dynamo.reset()
    model = tiny(name)
    batch = COLLATE[1]([(r, -1) for r in records])
    start = model.start_sampling(batch, seed=0)
    t = torch.full((batch.n_graphs,), 0.5)
    cond = start.cond

    def step():
        if name == "diffcsp":
            return model.predict_noise(start.batch, start.batch.pos, cond, t)
        return model.guided(start.batch, start.batch.pos, torch.full_like(start.batch.z, 0), t, cond)[0]

    want = step()
    compile_sampler(model)
    got = step()
    scale = want.abs().max()
    assert float((got - want).abs().max() / scale) < 1e-5


def test_resume_refuses_to_mix_compiled_and_eager_batches(tmp_path):
    base = {"task": 1, "split": "id", "seed": 0, "batch_size": 8, "batches": 3}
    eager = ChunkFolder(tmp_path / "t1.parquet", base)
    assert eager.open() == set()
    eager.path(0).write_text("batch 0")
    compiled = ChunkFolder(tmp_path / "t1.parquet", base | {"compile": True})
    with pytest.raises(C2NPError, match="compile"):
        compiled.open()
    assert eager.open() == {0}  # the eager batches are kept
    eager.remove()
    assert compiled.open() == set()
    compiled.path(1).write_text("batch 1")
    with pytest.raises(C2NPError, match="compile"):
        ChunkFolder(tmp_path / "t1.parquet", base).open()
