"""ADiT family, the All-atom Diffusion Transformer (Joshi et al., ICML 2025;
chaitjo/all-atom-diffusion-transformer), adapted to finite particles.

Task 1: latent diffusion.
- A transformer VAE encodes every atom (species, coordinates / R in the cell's frame,
  site features in the cell) to an 8-dim latent and decodes species and coordinates
  back; KL weight 1e-4.
- A diffusion transformer (DiT: adaptive-layer-norm blocks conditioned on cell + R and
  time) is trained with flow matching on those latents: a linear path from data to
  N(0, I), clean-latent prediction, self-conditioning on its previous prediction and
  condition dropout for classifier-free guidance.
- One run, two stages, in ADiT's order: the VAE trains alone until it converges (the
  training loop's rule), then it is restored to its best weights and frozen, and the DiT
  trains on its latents until it converges in turn (``ADiTTask1.advance_stage``, driven by
  ``c2np.training.module.RunMonitor``). The VAE's reconstruction RMSD (Angstrom) is logged.
- Attention is ``torch.nn.functional.scaled_dot_product_attention`` within each particle
  (flash / memory-efficient kernels: memory linear in the atoms), every atom a token.
- Coordinates are expressed in an orthonormal frame built from the conditioning cell's
  lattice vectors, so the model is exactly equivariant when particle and cell rotate
  together, although a transformer on coordinates is not equivariant by itself.

Task 2: SchNet encoder -> transformer over the atoms (invariant features only, so the
encoding is rotation-invariant) -> a DiT over the six lattice parameters as tokens,
trained with flow matching (linear path, ADiT's) or on the VP path with the paper's cubic
beta(t); deterministic sampling, the mean of seeded draws, and a space-group head.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from c2np.errors import ConfigError
from c2np.models.batches import Task1Batch, Task2Batch
from c2np.models.components import MAX_Z, gaussian_latent, mean_pool, mlp, sinusoidal
from c2np.models.schedules import gaussian_path
from c2np.models.task1_base import SampleStart, Task1Generator
from c2np.models.task2_base import LatticeGenerator


def ragged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ptr: torch.Tensor,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """Self-attention within each graph: (n, heads, d) -> (n, heads, d).

    Graphs of equal size go through one batched call; otherwise one call per graph, so no
    block-diagonal mask (quadratic in memory) is ever built and the fused kernels apply.
    ``dtype`` (e.g. ``torch.bfloat16``): q, k and v enter the kernels in it and the output
    returns in theirs. In fp32 a GPU runs the memory-efficient kernel on its CUDA cores;
    only half precision reaches the flash kernels on the tensor cores, which is where the
    compute of a large particle's attention (quadratic in its atoms) goes.
    """
    if dtype is not None and dtype != q.dtype:
        return ragged_attention(q.to(dtype), k.to(dtype), v.to(dtype), ptr).to(q.dtype)
    sizes = (ptr[1:] - ptr[:-1]).tolist()
    if len(set(sizes)) == 1:
        g, m = len(sizes), sizes[0]
        qb, kb, vb = (x.view(g, m, *x.shape[1:]).transpose(1, 2) for x in (q, k, v))
        return nn.functional.scaled_dot_product_attention(qb, kb, vb).transpose(1, 2).reshape(q.shape)
    out = []
    for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
        qb, kb, vb = (x[a:b].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        out.append(nn.functional.scaled_dot_product_attention(qb, kb, vb)[0].transpose(0, 1))
    return torch.cat(out)


class DiTBlock(nn.Module):
    """Transformer block with adaptive layer norm (adaLN-Zero, Peebles & Xie 2023): the
    condition ``c`` (one vector per token) sets shift, scale and a zero-initialised gate.
    ``attention_dtype`` (None: the inputs') is the precision of the attention kernels
    (:func:`ragged_attention`); ``c2np predict --attention bf16`` sets it while it generates.
    It is no parameter or buffer, so checkpoints do not carry it."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.attention_dtype: torch.dtype | None = None
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, int(hidden * mlp_ratio)), nn.GELU(approximate="tanh"),
                                 nn.Linear(int(hidden * mlp_ratio), hidden))
        self.modulation = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(nn.functional.silu(c)).chunk(6, -1)
        y = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(y).view(len(x), 3, self.heads, -1).unbind(1)
        x = x + gate1 * self.proj(ragged_attention(q, k, v, ptr, self.attention_dtype).reshape(len(x), -1))
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class DiT(nn.Module):
    """Tokens in, one output vector per token; ``c`` (n, hidden) conditions every block.
    ``zero_out`` starts the output at zero (DiT's adaLN-Zero); the VAE's encoder and
    decoder keep a default initialisation so that reconstruction starts learning at once."""

    def __init__(self, d_in: int, d_out: int, hidden: int, layers: int, heads: int, zero_out: bool = True):
        super().__init__()
        self.embed = nn.Linear(d_in, hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.final_modulation = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, d_out)
        for layer in (self.final_modulation, self.out) if zero_out else (self.final_modulation,):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, ptr: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(x) if extra is None else self.embed(x) + extra
        for block in self.blocks:
            h = block(h, c, ptr)
        shift, scale = self.final_modulation(nn.functional.silu(c)).chunk(2, -1)
        return self.out(self.norm(h) * (1 + scale) + shift)


def cell_frame(lattice: torch.Tensor) -> torch.Tensor:
    """(G, 3, 3) orthonormal frames (columns) from the lattice rows a, b by Gram-Schmidt:
    rotating the cell by Q turns the frame into Q F, so coordinates ``pos @ F`` do not
    change when particle and cell rotate together."""
    a, b = lattice[:, 0], lattice[:, 1]
    e1 = a / a.norm(dim=-1, keepdim=True)
    b = b - (b * e1).sum(-1, keepdim=True) * e1
    e2 = b / b.norm(dim=-1, keepdim=True)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], -1)


class ADiTTask1(Task1Generator):
    """Per-atom transformer VAE + latent DiT trained by flow matching."""

    def __init__(self, hidden: int = 256, heads: int = 8, layers: int = 6, vae_layers: int = 2,
                 d_latent: int = 8, kl_weight: float = 1e-4, recon_weight: float = 1.0,
                 type_weight: float = 1.0, path: str = "linear", min_t: float = 0.01,
                 self_condition: float = 0.5, p_uncond: float = 0.1, steps: int = 100,
                 guidance: float = 2.0, **kw):
        super().__init__(hidden=hidden, latent=0, **kw)
        gaussian_path(torch.zeros(1), path)  # reject an unknown path now, not at the first step
        self.d_latent, self.kl_weight, self.recon_weight, self.type_weight = d_latent, kl_weight, recon_weight, type_weight
        self.path, self.min_t, self.self_condition = path, min_t, self_condition
        self.p_uncond, self.steps, self.guidance = p_uncond, steps, guidance
        self.atom_embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.encoder = DiT(3, 2 * d_latent, hidden, vae_layers, heads, zero_out=False)
        self.decoder = DiT(d_latent, 3 + hidden, hidden, vae_layers, heads, zero_out=False)
        self.type_query = nn.Embedding(MAX_Z + 1, hidden)
        self.denoiser = DiT(2 * d_latent, d_latent, hidden, layers, heads)
        self.time_embedding = mlp(hidden, hidden, hidden)
        self.null_condition = nn.Parameter(torch.zeros(hidden))
        # 0: the VAE trains (no DiT); 1: the VAE is frozen and the DiT trains on its latents.
        # A buffer, so that checkpoints (and a resumed run) know the stage.
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))

    # -- training stages -----------------------------------------------------------------
    STAGES = ("vae", "dit")

    def advance_stage(self) -> bool:
        """Go from the VAE stage to the DiT stage; False when there is no further stage.

        The caller restores the VAE's best weights first (``RunMonitor``): the DiT must
        learn the latents of the VAE that is kept, not of one ``patience`` epochs later.
        """
        if int(self.stage) + 1 >= len(self.STAGES):
            return False
        self.stage.fill_(int(self.stage) + 1)
        return True

    def vae_parameters(self) -> list[nn.Parameter]:
        """What the DiT stage freezes: the VAE (encoder, decoder, embeddings) and the cell
        and site conditioning it reads. The size and species heads train in both stages."""
        return [p for m in (self.atom_embedding, self.encoder, self.decoder, self.type_query, self.conditioner,
                            self.site_embedding) for p in m.parameters()]

    def cell_condition(self, batch: Task1Batch) -> torch.Tensor:
        # the VAE reads it too: frozen with the VAE in the DiT stage, or the decoder's
        # conditioning would drift under the frozen weights
        with torch.set_grad_enabled(torch.is_grad_enabled() and int(self.stage) == 0):
            return super().cell_condition(batch)

    # -- VAE ---------------------------------------------------------------------------
    def frame_coordinates(self, batch: Task1Batch, pos: torch.Tensor) -> torch.Tensor:
        """Cartesian positions -> coordinates in the cell's frame, divided by R."""
        frame = cell_frame(batch.lattice)[batch.batch]
        return torch.einsum("ni,nij->nj", pos, frame) / batch.radius[batch.batch].unsqueeze(-1)

    def cartesian(self, batch: Task1Batch, coords: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`frame_coordinates`."""
        frame = cell_frame(batch.lattice)[batch.batch]
        return torch.einsum("nj,nij->ni", coords * batch.radius[batch.batch].unsqueeze(-1), frame)

    def vae_encode(self, batch: Task1Batch, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom posterior (mu, logvar), each (n, d_latent)."""
        extra = self.atom_embedding(batch.z) + self.site_condition(batch, batch.pos)
        out = self.encoder(self.frame_coordinates(batch, batch.pos), cond[batch.batch], batch.ptr, extra)
        return out.chunk(2, -1)

    def vae_decode(self, batch: Task1Batch, lat: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents -> coordinates (frame / R) and species logits (n, S) over the cell's species."""
        out = self.decoder(lat, cond[batch.batch], batch.ptr)
        slots = batch.species[batch.batch]
        logits = torch.einsum("nh,nsh->ns", out[:, 3:], self.type_query(slots)) / self.hidden ** 0.5
        return out[:, :3], logits.masked_fill(slots == 0, -1e9)

    def reconstruction(self, batch: Task1Batch, cond: torch.Tensor | None = None,
                       sample: bool = False) -> dict[str, torch.Tensor]:
        """VAE losses of a batch and its reconstruction RMSD in Angstrom (atoms in order)."""
        cond = self.cell_condition(batch) if cond is None else cond
        lat, kl = gaussian_latent(*self.vae_encode(batch, cond), sample=sample)  # KL per atom
        coords, logits = self.vae_decode(batch, lat, cond)
        # squared error in Angstrom^2 (coordinates are scaled by 1/R only inside the network)
        err = ((coords - self.frame_coordinates(batch, batch.pos))
               * batch.radius[batch.batch].unsqueeze(-1)).pow(2).sum(-1)
        slot = (batch.species[batch.batch] == batch.z.unsqueeze(-1)).float().argmax(-1)
        types = nn.functional.cross_entropy(logits, slot)
        return {"recon": err.mean(), "recon_rmsd": err.mean().detach().sqrt(), "types": types,
                "type_accuracy": (logits.argmax(-1) == slot).float().mean().detach(),
                "latent_kl": kl, "latents": lat}

    # -- latent DiT ----------------------------------------------------------------------
    def velocity_input(self, batch: Task1Batch, cond: torch.Tensor, keep: torch.Tensor,
                       t: torch.Tensor) -> torch.Tensor:
        """Per-token condition of the DiT: cell + R (or the null condition) plus time."""
        graph = torch.where(keep.view(-1, 1), cond, self.null_condition.expand_as(cond))
        return (graph + self.time_embedding(sinusoidal(t, self.hidden, 1.0)))[batch.batch]

    def predict_clean(self, batch, x_t, x_sc, cond, keep, t) -> torch.Tensor:
        """The DiT's clean-latent prediction from x_t and the self-conditioning input."""
        return self.denoiser(torch.cat([x_t, x_sc], -1), self.velocity_input(batch, cond, keep, t), batch.ptr)

    def coordinate_loss(self, batch, cond, lat):
        # ADiT trains the VAE first and then the DiT on the frozen VAE's latents: the stages
        # of one run here. Trained jointly (an earlier version), the DiT's flow loss rose
        # while the VAE's latents spread out, so the validation loss stopped improving long
        # before either part had converged.
        dit = int(self.stage) == 1
        with torch.set_grad_enabled(torch.is_grad_enabled() and not dit):  # frozen in the DiT stage
            vae = self.reconstruction(batch, cond, sample=True)
        vae_loss = self.recon_weight * vae["recon"] + self.type_weight * vae["types"] + self.kl_weight * vae["latent_kl"]
        terms = {"recon_rmsd": vae["recon_rmsd"], "types": vae["types"], "type_accuracy": vae["type_accuracy"],
                 "latent_kl": vae["latent_kl"]}
        if not dit:
            return {"coords": vae_loss} | terms
        x0 = vae["latents"]
        graphs, device = batch.n_graphs, x0.device
        t = self.min_t + (1 - 2 * self.min_t) * torch.rand(graphs, device=device)
        a, s = gaussian_path(t, self.path)
        noise = torch.randn_like(x0)
        x_t = a[batch.batch].unsqueeze(-1) * x0 + s[batch.batch].unsqueeze(-1) * noise
        keep = torch.rand(graphs, device=device) >= self.p_uncond
        x_sc = torch.zeros_like(x0)
        if self.self_condition > 0 and float(torch.rand(())) < self.self_condition:
            with torch.no_grad():
                x_sc = self.predict_clean(batch, x_t, x_sc, cond, keep, t)
        flow = torch.mean(torch.sum((self.predict_clean(batch, x_t, x_sc, cond, keep, t) - x0) ** 2, -1))
        # the frozen VAE's terms stay in the sum (a constant to the gradient): the DiT stage's
        # loss, and so Table 5's Loss column, is ADiT's whole objective, VAE and flow
        return {"coords": vae_loss + flow, "flow": flow} | terms

    def sample_positions(self, start: SampleStart) -> torch.Tensor:
        """Euler integration of the flow from N(0, I) latents, classifier-free guidance,
        self-conditioning; decodes species (into ``start.batch.z``) and positions."""
        if int(self.stage) == 0:
            raise ConfigError("this ADiT checkpoint is still in its VAE stage: its DiT has not trained yet, so "
                              "it cannot generate (train on until the VAE converges; run.json's 'stages' lists "
                              "the stages done)")
        sample, cond = start.batch, start.cond
        device, graphs = sample.pos.device, sample.n_graphs
        x = torch.randn(len(sample.z), self.d_latent, generator=start.generator).to(device)
        x_sc = torch.zeros_like(x)
        yes = torch.ones(graphs, dtype=torch.bool, device=device)
        times = torch.linspace(1.0 - self.min_t, self.min_t, self.steps).tolist() + [0.0]
        for t_now, t_next in pairwise(times):
            t = torch.full((graphs,), t_now, device=device)
            x0 = self.predict_clean(sample, x, x_sc, cond, yes, t)
            if self.guidance != 1.0:
                x0_u = self.predict_clean(sample, x, x_sc, cond, ~yes, t)
                x0 = x0_u + self.guidance * (x0 - x0_u)
            x_sc = x0
            a, s = gaussian_path(t, self.path)
            a_next, s_next = gaussian_path(torch.full_like(t, t_next), self.path)
            eps = (x - a[sample.batch].unsqueeze(-1) * x0) / s[sample.batch].unsqueeze(-1)
            x = a_next[sample.batch].unsqueeze(-1) * x0 + s_next[sample.batch].unsqueeze(-1) * eps
        coords, logits = self.vae_decode(sample, x, cond)
        sample.z = sample.species[sample.batch].gather(1, logits.argmax(-1, keepdim=True)).squeeze(-1)
        pos = self.cartesian(sample, coords)
        rmax = sample.radius[sample.batch].view(-1, 1)
        norm = pos.norm(dim=1, keepdim=True)
        return torch.where(norm > rmax, pos * rmax / norm.clamp_min(1e-12), pos)


class ADiTTask2(LatticeGenerator):
    """SchNet + transformer encoder, a DiT over the six lattice parameters, flow matching."""

    def __init__(self, hidden: int = 64, heads: int = 4, encoder_layers: int = 2, layers: int = 4,
                 path: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0,
                 min_t: float = 0.01, self_condition: float = 0.5, steps: int = 100, **kw):
        super().__init__(hidden=hidden, **kw)
        gaussian_path(torch.zeros(1), path)
        self.path, self.beta_min, self.beta_max = path, beta_min, beta_max
        self.min_t, self.self_condition, self.steps = min_t, self_condition, steps
        self.atom_transformer = nn.ModuleList(DiTBlock(hidden, heads) for _ in range(encoder_layers))
        self.atom_condition = nn.Parameter(torch.zeros(hidden))
        self.parameter_embedding = nn.Embedding(6, hidden)  # which of a, b, c, alpha, beta, gamma
        self.denoiser = DiT(2, 1, hidden, layers, heads)
        self.time_embedding = mlp(hidden, hidden, hidden)

    def embed(self, batch: Task2Batch) -> torch.Tensor:
        """SchNet features (distances only), transformer blocks over the atoms (no positions
        enter), mean pooling: a rotation-invariant encoding (G, hidden)."""
        h = self.encoder(batch.z, batch.pos, batch.ptr)
        c = self.atom_condition.expand_as(h)
        for block in self.atom_transformer:
            h = block(h, c, batch.ptr)
        return mean_pool(h, batch.batch, batch.n_graphs)

    def _path(self, t):
        return gaussian_path(t, self.path, self.beta_min, self.beta_max, 3.0)

    def predict_clean(self, x_t, x_sc, t, h) -> torch.Tensor:
        """Clean standardised lattice (G, 6) from x_t; the six parameters are DiT tokens."""
        graphs = len(h)
        ptr = torch.arange(0, 6 * graphs + 1, 6, device=h.device)
        c = (h + self.time_embedding(sinusoidal(t, self.hidden, 1.0))).repeat_interleave(6, 0)
        tokens = torch.stack([x_t, x_sc], -1).view(6 * graphs, 2)
        extra = self.parameter_embedding.weight.repeat(graphs, 1)
        return self.denoiser(tokens, c, ptr, extra).view(graphs, 6)

    def lattice_loss(self, x0, h):
        t = self.min_t + (1 - 2 * self.min_t) * torch.rand(len(x0), device=x0.device)
        a, s = self._path(t)
        x_t = a.view(-1, 1) * x0 + s.view(-1, 1) * torch.randn_like(x0)
        x_sc = torch.zeros_like(x0)
        if self.self_condition > 0 and float(torch.rand(())) < self.self_condition:
            with torch.no_grad():
                x_sc = self.predict_clean(x_t, x_sc, t, h)
        return torch.mean((self.predict_clean(x_t, x_sc, t, h) - x0) ** 2)

    def sample_lattice(self, h, generator):
        x = torch.randn(len(h), 6, generator=generator).to(h.device)
        x_sc = torch.zeros_like(x)
        times = torch.linspace(1.0 - self.min_t, self.min_t, self.steps).tolist() + [0.0]
        for t_now, t_next in pairwise(times):
            t = torch.full((len(h),), t_now, device=h.device)
            x0 = self.predict_clean(x, x_sc, t, h)
            x_sc = x0
            a, s = self._path(t)
            a_next, s_next = self._path(torch.full_like(t, t_next))
            x = a_next.view(-1, 1) * x0 + s_next.view(-1, 1) * (x - a.view(-1, 1) * x0) / s.view(-1, 1)
        return x
