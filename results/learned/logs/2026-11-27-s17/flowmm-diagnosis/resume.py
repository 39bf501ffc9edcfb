"""Where does the sampler go wrong?  python resume.py R t0 MODE [steps]
MODE true:    start at t0 from the training marginal x_t0 = (1-k) x_data + k x_base (true particle,
              fresh base; cheating oracle), then integrate the network from t0 to 0.
MODE uniform: no data used. From t=1 to t0 integrate the exact marginal field of
              uniform-ball data (E[(b-d)/R | x] with d, b uniform in the ball; closed form,
              radial), from the sampler's own seeded start; then the network from t0 to 0.
MODE shell: network with shell_correct from t=1; MODE uniform+shell: uniform for t>t0 then shell-corrected network.
MODE net:     plain sampler (t0 ignored).
Same step grid as FlowMMTask1.sample_positions (200 Euler steps on linspace(1,0))."""
import sys, time, dataclasses, numpy as np, torch
sys.path.insert(0, "/work/flowmm-wt-scratch")
from common import *
from c2np.models.generation import into_sphere
from c2np.models.graph import reused_neighbours, DEFAULT_SKIN
from c2np.models.flowmm import _uniform_ball

R = int(sys.argv[1]); t0 = float(sys.argv[2]); mode = sys.argv[3]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 200
mat = sys.argv[5] if len(sys.argv) > 5 else "BaAlH3"
model = load(); rec = record(R, mat); batch = batch_of(rec)
sites = rec.positions.astype(np.float64)

def uniform_field(x, k, R, nq=256):
    """E[(b - d)/R | x_t = x] for d, b independent uniform in the ball of R (exact, by quadrature
    of the lens ball(0,R) & ball(x/(1-k), kR/(1-k)))."""
    x = np.asarray(x, np.float64); rx = np.linalg.norm(x, axis=1); u = x / np.maximum(rx, 1e-12)[:, None]
    if k >= 1 - 1e-9:
        return x / R
    c = rx / (1 - k); r = np.full_like(c, k * R / (1 - k))
    lo = np.maximum(-R, c - r); hi = np.minimum(R, c + r)
    s = np.linspace(0, 1, nq)[None, :]
    z = lo[:, None] + (hi - lo)[:, None] * s
    area = np.clip(np.minimum(R ** 2 - z ** 2, r[:, None] ** 2 - (z - c[:, None]) ** 2), 0, None)
    zbar = (area * z).sum(1) / np.maximum(area.sum(1), 1e-30)
    zbar = np.where(area.sum(1) > 0, zbar, np.clip(c, -R, R))
    ed = u * zbar[:, None]
    return (x - ed) / (k * R)

def shell_correct(pred, x, k, bins=12):
    """replace the shell-mean radial component of the network output (which a network without
    access to the direction x/|x| cannot produce in the interior) by the exact shell-mean radial
    field of uniform-ball data; the network's remaining (local) part is kept."""
    xn = x.numpy().astype(np.float64); p = pred.numpy().astype(np.float64)
    r = np.linalg.norm(xn, axis=1); u = xn / np.maximum(r, 1e-12)[:, None]
    pr = (p * u).sum(1)
    ur = (uniform_field(xn, k, R) * u).sum(1)
    b = np.minimum((r / R) ** 3 * bins, bins - 1).astype(int)  # equal-volume shells
    cnt = np.maximum(np.bincount(b, minlength=bins), 1)
    mean_net = np.bincount(b, pr, minlength=bins) / cnt
    mean_uni = np.bincount(b, ur, minlength=bins) / cnt
    p = p + ((mean_uni - mean_net)[b])[:, None] * u
    return torch.as_tensor(p, dtype=torch.float32)

torch.manual_seed(1)
t_start = time.time()
with torch.no_grad(), model.averaged_weights():
    cond = model.cell_condition(batch)
    times = torch.linspace(1.0, 0.0, steps + 1)
    i0 = int(round((1 - t0) * steps)) if mode != "net" else 0
    if mode == "true":
        sample = batch
        k = float(model.interpolant(times[i0])[0])
        x = (1 - k) * batch.pos + k * _uniform_ball(batch.radius[batch.batch])
    else:
        start = model.start_sampling(batch, 12345)
        sample, cond = start.batch, start.cond
        x = sample.pos
        if mode in ("uniform", "uniform+shell"):
            for i in range(i0):
                k, speed = model.interpolant(times[i])
                pred = torch.as_tensor(uniform_field(x.numpy(), float(k), R), dtype=torch.float32)
                x = x + float(times[i + 1] - times[i]) * float(speed) * R * pred
    radius = sample.radius[sample.batch].view(-1, 1)
    tm = model.interpolant(times[i0])[0]
    print("%s R=%d %s t0=%.2f N=%d: at t0 medNN %.3f close %.3f Rg %.2f" % (mat, R, mode, float(times[i0]), len(x), *nnstats(x.numpy()), rg(x.numpy())), flush=True)
    with reused_neighbours(model, DEFAULT_SKIN):
        for i in range(i0, steps):
            t = torch.full((sample.n_graphs,), float(times[i]))
            _, speed = model.interpolant(times[i])
            pred = model.displacement(sample, x, cond, t)
            if mode in ("shell", "uniform+shell"):
                pred = shell_correct(pred, x, float(model.interpolant(times[i])[0]))
            x = x + float(times[i + 1] - times[i]) * float(speed) * radius * pred
            if (i + 1) % 40 == 0:
                print("  t=%.2f medNN %.3f close %.3f Rg %.2f" % (float(times[i + 1]), *nnstats(x.numpy()), rg(x.numpy())), flush=True)
    xf = into_sphere(x, radius).numpy()
share, dsite, empty = occupancy(xf, sites)
zs = sample.z.numpy(); parts = []
for zz in np.unique(rec.numbers):
    ref_z = sites[rec.numbers == zz]; gen_z = xf[zs == zz].astype(np.float64)
    if len(gen_z):
        dz = cKDTree(ref_z).query(gen_z)[0]
        parts.append("Z=%d n=%d: med dist to same-species site %.2f, within 0.5A %.2f, medNN %.2f (ref %.2f)" % (
            zz, len(gen_z), np.median(dz), (dz < 0.5).mean(), nnstats(gen_z)[0], nnstats(ref_z)[0]))
print("SPECIES " + " | ".join(parts))
print("FINAL %s R=%d %s t0=%.2f: medNN %.3f close<0.5 %.3f (ref medNN %.3f) Rg %.2f (ref %.2f) | share-site %.3f, med dist to site %.3f, empty sites %.3f | %.0f s" % (
    mat, R, mode, t0, *nnstats(xf), nnstats(sites)[0], rg(xf), rg(sites), share, dsite, empty, time.time() - t_start), flush=True)
