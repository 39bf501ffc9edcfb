"""Teacher-forced error of the FlowMM Task 1 network: python tf.py R [draws] [material]
x_t built exactly as in FlowMMTask1.coordinate_loss (true particle, uniform-ball base)."""
import sys, time, numpy as np, torch
sys.path.insert(0, "/work/flowmm-wt-scratch")
from common import *
from c2np.models.flowmm import _uniform_ball

R = int(sys.argv[1]); draws = int(sys.argv[2]) if len(sys.argv) > 2 else 2
mat = sys.argv[3] if len(sys.argv) > 3 else "BaAlH3"
TS = [float(s) for s in (sys.argv[4].split(",") if len(sys.argv) > 4 else "0.02,0.05,0.1,0.2,0.3,0.5,0.7,0.9,1.0".split(","))]
model = load(); rec = record(R, mat); batch = batch_of(rec)
sites = rec.positions.astype(np.float64); tree = cKDTree(sites)
print(mat, R, "N", len(sites), "draws", draws)
print("   t   kappa  kR/(1-k) | MSE/comp net  bayes1  zero | rms|err| A (x R): net bayes1 | x0 err A (kR|err|): net bayes1 | site-id acc: net bayes1 | MSE interior(|x|<R-5)/shell net")
torch.manual_seed(0)
tot = []
with torch.no_grad(), model.averaged_weights():
    cond = model.cell_condition(batch)
    for tv in TS:
        acc = {k: [] for k in "mn mb mz en eb xn xb sn sb mi ms".split()}
        for dr in range(draws):
            t = torch.full((1,), tv)
            kappa, _ = model.interpolant(t)
            base = _uniform_ball(batch.radius[batch.batch])
            k = float(kappa)
            xt = (1 - k) * batch.pos + k * base
            out = model.displacement(batch, xt, cond, t)
            target = (base - batch.pos) / R
            bp = torch.as_tensor(bayes_pred(xt.numpy(), sites, k, float(R)), dtype=torch.float32)
            en = (out - target).pow(2).sum(1); eb = (bp - target).pow(2).sum(1)
            acc["mn"].append(en.mean() / 3); acc["mb"].append(eb.mean() / 3); acc["mz"].append(target.pow(2).mean())
            acc["en"].append(en.mean().sqrt() * R); acc["eb"].append(eb.mean().sqrt() * R)
            acc["xn"].append(k * R * en.mean().sqrt()); acc["xb"].append(k * R * eb.mean().sqrt())
            true_site = np.arange(len(sites))
            x0n = (xt - k * R * out).numpy(); x0b = (xt - k * R * bp).numpy()
            acc["sn"].append((tree.query(x0n)[1] == true_site).mean()); acc["sb"].append((tree.query(x0b)[1] == true_site).mean())
            inner = xt.norm(dim=1) < R - 5
            acc["mi"].append(en[inner].mean() / 3 if inner.any() else float("nan")); acc["ms"].append(en[~inner].mean() / 3)
        a = {kk: float(np.mean([float(v) for v in vv])) for kk, vv in acc.items()}
        tot.append(a["mn"])
        print("%5.2f %6.4f %7.2f | %7.4f %7.4f %6.3f | %7.2f %7.2f | %6.3f %6.3f | %5.3f %5.3f | %.4f / %.4f" % (
            tv, k, k * R / max(1 - k, 1e-9), a["mn"], a["mb"], a["mz"], a["en"], a["eb"], a["xn"], a["xb"], a["sn"], a["sb"], a["mi"], a["ms"]), flush=True)
print("mean net MSE over these t: %.4f" % np.mean(tot))
