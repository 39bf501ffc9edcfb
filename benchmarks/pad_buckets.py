"""Static shapes on the real training set (``train.pad_buckets``): how many buckets an
epoch uses, how much of a padded step is padding, and how full the radius graphs'
fixed buffers get; prints a table. CPU only.

    python benchmarks/pad_buckets.py --store c2np-store

For every batch of one epoch (the size-bucketed sampler, seed 0, CDVAE Task 1's batch
size and cutoff): the atom bucket at 1, 2 and 4 sizes per doubling, and the share of
padded atoms. Then the radius graphs of every batch, clean and perturbed at a noise
level drawn per graph as in training (seeded), with the cell list (``radius_edges``):
the largest candidate pairs and edges per padded atom of a batch, against the
capacities of ``c2np.models.padding`` (a graph past them would make the loss NaN), and
the share of each edge buffer that is padding.

``--capture``: instead, the shapes of the captured step (``train.capture``): for every
batch of ``--epochs`` epochs, its atoms padded to ``train.pad_buckets`` sizes per doubling
(at least ``padding.MIN_PADDING_ATOMS`` more) and its two radius graphs (clean, and perturbed as
in training) to one of ``train.edge_buckets`` capacities per doubling; for several of
each, the shapes the epochs meet (each one captured graph) and the padded shares of the
atoms and the edges. Fewer padded rows are less GPU work; more shapes are more
captures (about a second each) and more graphs held.
"""

from __future__ import annotations

import argparse
import time

import torch

from c2np.models.generation import sigmas
from c2np.models.graph import _candidates, radius_edges
from c2np.models.padding import PadSpec, atom_slots, edge_slots, pad_spec
from c2np.store.dataset import open_dataset
from c2np.training import data as tdata
from c2np.training.configs import load_training_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of batches to count (graphs: the first only)")
    ap.add_argument("--limit", type=int, default=0, help="first N train records only (a quick look)")
    ap.add_argument("--capture", action="store_true",
                    help="the captured step's shapes and padding for several bucket counts (see above)")
    args = ap.parse_args()
    cfg = load_training_config("cdvae", 1)
    m, batch_size = cfg["model"], int(cfg["train"]["batch_size"])
    records = tdata.load_records(open_dataset(args.store), "train", limit=args.limit or None)
    if args.capture:
        t0, cpu0 = time.perf_counter(), time.process_time()
        rows = capture_ladders(records, batch_size, m["cutoff"], sigmas(m["sigma_max"], m["sigma_min"], m["n_sigmas"]),
                               args.epochs)
        print(f"{len(records)} train records, batch {batch_size}, cutoff {m['cutoff']} A, {args.epochs} epoch(s): "
              f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU\n")
        print("| atom sizes per doubling | edge capacities per doubling | shapes | padded atoms | padded edges |\n"
              "|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['atoms_per_octave']} | {r['edges_per_octave']} | {r['shapes']} | {r['padded_atoms']:.1%} | "
                  f"{r['padded_edges']:.1%} |")
        return
    sizes = [len(r.numbers) for r in records]
    sampler = tdata.BucketBatchSampler(sizes, batch_size, True, 0)
    print(f"{len(records)} train records, batch {batch_size}, cutoff {m['cutoff']} A")
    print("\n| sizes per doubling | buckets used in an epoch | steps per epoch | padded atoms (share of a padded epoch) |\n"
          "|---|---|---|---|")
    epoch_batches = []
    for e in range(args.epochs):
        sampler.set_epoch(e)
        epoch_batches.append(sampler.global_batches())
    for q in (1, 2, 4):
        spec = PadSpec(graphs=batch_size + 1, cell_atoms=1, cell_pairs=1, species=1, per_octave=q)
        used, real, padded = set(), 0, 0
        for batches in epoch_batches:
            for b in batches:
                n = int(sum(sizes[i] for i in b))
                used.add(spec.atoms(n))
                real, padded = real + n, padded + spec.atoms(n)
        print(f"| {q} | {len(used)} | {len(epoch_batches[0])} | {1 - real / padded:.1%} |", flush=True)

    spec = pad_spec(records, batch_size, 2)
    levels = sigmas(m["sigma_max"], m["sigma_min"], m["n_sigmas"])
    gen = torch.Generator().manual_seed(0)
    worst = {"clean": [0.0, 0.0], "noisy": [0.0, 0.0]}
    fill = {"clean": [0, 0], "noisy": [0, 0]}
    t0, cpu0 = time.perf_counter(), time.process_time()
    for b in epoch_batches[0]:
        batch = tdata.collate_task1([(records[i], -1) for i in b])
        atoms = spec.atoms(len(batch.pos))
        cand_cap, edge_cap = spec.capacities(atoms)
        sigma = levels[torch.randint(len(levels), (batch.n_graphs,), generator=gen)][batch.batch].view(-1, 1)
        noisy = batch.pos + sigma * torch.randn(batch.pos.shape, generator=gen)
        for name, pos in (("clean", batch.pos), ("noisy", noisy)):
            cand = int(_candidates(pos, batch.ptr, m["cutoff"])[3].sum())
            edges = radius_edges(pos, batch.ptr, m["cutoff"]).shape[1]
            worst[name] = [max(worst[name][0], cand / atoms), max(worst[name][1], edges / atoms)]
            fill[name] = [fill[name][0] + edges, fill[name][1] + edge_cap]
            if cand > cand_cap or edges > edge_cap:
                print(f"  overflow: batch of {len(batch.pos)} atoms ({name}): {cand} candidates, {edges} edges "
                      f"against {cand_cap}, {edge_cap}")
    print(f"\nradius graphs of {len(epoch_batches[0])} batches: {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - cpu0:.0f} s CPU\n")
    print("| graph | most candidate pairs per padded atom | most edges per padded atom | padding share of the edge buffers |\n"
          "|---|---|---|---|")
    for name in worst:
        print(f"| {name} | {worst[name][0]:.1f} (capacity {spec.candidates_per_atom:g}) | {worst[name][1]:.1f} "
              f"(capacity {spec.edges_per_atom:g}) | {1 - fill[name][0] / fill[name][1]:.1%} |")


def capture_ladders(records, batch_size: int, cutoff: float, levels, epochs: int = 1,
                    atom_steps=(4, 6, 8), edge_steps=(4, 6, 8), seed: int = 0) -> list[dict]:
    """The captured step's shapes over ``epochs`` epochs of the size-bucketed sampler
    (seed ``seed``) for every pair of ``atom_steps`` x ``edge_steps`` sizes per doubling:
    rows of the shapes met and the padded shares of the atom and edge slots. Each batch's
    edge capacity holds the larger of its two radius graphs, the clean particle's and the
    perturbed one's (a noise level drawn per graph, seeded), as ``prepare_padded`` pads them."""
    sizes = [len(r.numbers) for r in records]
    sampler = tdata.BucketBatchSampler(sizes, batch_size, True, seed)
    gen = torch.Generator().manual_seed(seed)
    counts = []  # (atoms, clean edges + perturbed edges, larger of the two) per batch
    for e in range(epochs):
        sampler.set_epoch(e)
        for b in sampler.global_batches():
            batch = tdata.collate_task1([(records[i], -1) for i in b])
            sigma = levels[torch.randint(len(levels), (batch.n_graphs,), generator=gen)][batch.batch].view(-1, 1)
            noisy = batch.pos + sigma * torch.randn(batch.pos.shape, generator=gen)
            edges = [radius_edges(p, batch.ptr, cutoff).shape[1] for p in (batch.pos, noisy)]
            counts.append((len(batch.pos), sum(edges), max(edges)))
    rows = []
    for qa in atom_steps:
        for qe in edge_steps:
            shapes, real_a, slots_a, real_e, slots_e = set(), 0, 0, 0, 0
            for n, both, most in counts:
                a, s = atom_slots(n, qa), edge_slots(most, qe)
                shapes.add((a, s))
                real_a, slots_a, real_e, slots_e = real_a + n, slots_a + a, real_e + both, slots_e + 2 * s
            rows.append({"atoms_per_octave": qa, "edges_per_octave": qe, "shapes": len(shapes),
                         "padded_atoms": 1 - real_a / slots_a, "padded_edges": 1 - real_e / slots_e})
    return rows


if __name__ == "__main__":
    main()
