import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install 'c2np[torch]')")
pytest.importorskip("torch_geometric", reason="PyTorch Geometric not installed")

import c2np  # noqa: E402
from c2np.tasks.torch_views import Task1Dataset, Task2Dataset, pyg_collate, radius_graph  # noqa: E402


def test_radius_graph_equals_brute_force():
    rng = np.random.default_rng(0)
    pos = torch.as_tensor(rng.uniform(0, 6, (60, 3)))
    batch = torch.as_tensor(np.repeat([0, 1, 2], 20))
    edges = radius_graph(pos, 2.0, batch).numpy()
    p = pos.numpy()
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    same = batch.numpy()[:, None] == batch.numpy()[None]
    expected = np.argwhere((d < 2.0) & same & ~np.eye(60, dtype=bool))
    assert {tuple(e) for e in edges.T} == {tuple(e) for e in expected}
    capped = radius_graph(pos, 2.0, batch, max_num_neighbors=2).numpy()
    assert np.bincount(capped[0]).max() <= 2


def test_task_datasets_and_batching(small_store):
    ds = c2np.open_dataset(small_store)
    t1 = Task1Dataset(ds, "ood")
    s = t1[0]
    assert len(t1) == 3 * 2 and s["pos"].shape == (len(s["numbers"]), 3) and s["cell"].shape == (3, 3)
    t2 = Task2Dataset(ds, "id")
    assert len(t2) == 3 * 93
    loader = torch.utils.data.DataLoader(t2, batch_size=4, collate_fn=lambda b: pyg_collate(b, cutoff=3.0))
    batch = next(iter(loader))
    assert batch.num_graphs == 4 and batch.lattice.shape == (4, 6)
    assert batch.edge_index.max() < batch.num_nodes
    src, dst = batch.edge_index
    assert torch.all(batch.batch[src] == batch.batch[dst])  # no edges across particles
    assert torch.all((batch.pos[src] - batch.pos[dst]).norm(dim=1) < 3.0)
