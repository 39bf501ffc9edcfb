"""Sampler trajectory diagnostics: python traj.py R [net|bayes] [steps] [material]
Copies FlowMMTask1.sample_positions; prints stats of x_t and of the predicted endpoint
x0_hat = x_t - kappa R pred every 20 steps."""
import sys, time, numpy as np, torch
sys.path.insert(0, "/work/flowmm-wt-scratch")
from common import *
from c2np.models.generation import into_sphere
from c2np.models.graph import reused_neighbours, DEFAULT_SKIN

R = int(sys.argv[1]); mode = sys.argv[2] if len(sys.argv) > 2 else "net"
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 200
mat = sys.argv[4] if len(sys.argv) > 4 else "BaAlH3"
model = load(); rec = record(R, mat); batch = batch_of(rec)
sites = rec.positions.astype(np.float64)
print(mat, R, mode, steps, "ref N", len(sites), "ref median nn %.3f close %.3f Rg %.2f" % (*nnstats(sites), rg(sites)), flush=True)
t0 = time.time()
with torch.no_grad(), model.averaged_weights():
    start = model.start_sampling(batch, 12345)
    sample = start.batch
    times = torch.linspace(1.0, 0.0, steps + 1)
    x = sample.pos; radius = sample.radius[sample.batch].view(-1, 1)
    print("gen N", len(x))
    print("step     t   kappa |  x_t: medNN  close<.5  Rg | x0hat: medNN close<.5 share-site | rms pred  rms pred_radial(x/|x|)", flush=True)
    with reused_neighbours(model, DEFAULT_SKIN):
        for i in range(steps):
            t = torch.full((sample.n_graphs,), float(times[i]))
            kappa, speed = model.interpolant(times[i])
            if mode == "net":
                pred = model.displacement(sample, x, start.cond, t)
            else:
                pred = torch.as_tensor(bayes_pred(x.numpy(), sites, float(kappa), float(R)), dtype=torch.float32)
            if i % (steps // 10) == 0 or i == steps - 1:
                x0h = (x - float(kappa) * radius * pred).numpy()
                xn = x.numpy(); rhat = xn / np.linalg.norm(xn, axis=1, keepdims=True)
                pr = (pred.numpy() * rhat).sum(1)
                print("%4d %5.3f %6.4f | %6.3f %6.3f %6.2f | %6.3f %6.3f %6.3f | %.3f %+.3f" % (
                    i, float(times[i]), float(kappa), *nnstats(xn), rg(xn), *nnstats(x0h),
                    occupancy(x0h, sites)[0], float(pred.pow(2).sum(1).mean().sqrt()), pr.mean()), flush=True)
            dt = float(times[i + 1] - times[i])
            x = x + dt * float(speed) * radius * pred
    xf = into_sphere(x, radius).numpy()
share, dsite, empty = occupancy(xf, sites)
print("FINAL %s R=%d %s: medNN %.3f close<0.5 %.3f Rg %.2f (ref %.2f) | atoms sharing nearest site %.3f, median dist to site %.3f, empty sites %.3f | %.0f s" % (
    mat, R, mode, *nnstats(xf), rg(xf), rg(sites), share, dsite, empty, time.time() - t0))
np.save("/work/flowmm-wt-scratch/final_%s_R%d_%s.npy" % (mat, R, mode), xf)
