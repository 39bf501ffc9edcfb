"""How far ``train.bf16_edges`` (the SchNet edge pipeline in bf16) moves a CDVAE Task 1
step from fp32, on the CPU; prints a table.

    python benchmarks/bf16_edges.py --store c2np-store

The bundled config's model (initial weights, seed 0), the realistic batch of
``step_host_cost.py`` (the bucketed batch nearest the epoch's mean atom count), the
noise levels and perturbations drawn on the host (seeded) and the same latent draw
(``torch.manual_seed``): the loss, the gradient norm of one backward (before clipping)
and the cosine between the bf16 and fp32 gradients.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from step_host_cost import model_for, typical_batch

from c2np.models.components import schnet_encoders
from c2np.store.dataset import open_dataset
from c2np.training import data as tdata


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="c2np-store")
    args = ap.parse_args()
    records = tdata.load_records(open_dataset(args.store), "train")
    model, batch_size = model_for("cdvae", 1, records)
    items = typical_batch(records, 1, batch_size)
    batch = tdata.make_collate(1, model.host_plan(), 0)(items)
    batch = dataclasses.replace(batch, edge_index=None, graph_cutoff=None, score_edges=None, score_cutoff=None)
    rows = {}
    for name, dtype in (("fp32", None), ("bf16 edges", torch.bfloat16)):
        for encoder in schnet_encoders(model):
            encoder.edge_dtype = dtype
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        loss = model.loss(batch)["loss"]
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        rows[name] = (float(loss.detach()), grad)
    ref_loss, ref = rows["fp32"]
    print(f"CDVAE Task 1, {batch.n_graphs} particles, {len(batch.pos):,} atoms, {torch.get_num_threads()} threads\n")
    print("| edge pipeline | loss | loss vs fp32 | gradient norm | norm vs fp32 | cosine to fp32 gradient |\n"
          "|---|---|---|---|---|---|")
    for name, (loss, grad) in rows.items():
        cos = float(torch.nn.functional.cosine_similarity(grad.double(), ref.double(), dim=0))
        print(f"| {name} | {loss:.6f} | {loss / ref_loss - 1:+.2e} | {float(grad.norm()):.5f} | "
              f"{float(grad.norm() / ref.norm()) - 1:+.2e} | {cos:.6f} |")


if __name__ == "__main__":
    main()
