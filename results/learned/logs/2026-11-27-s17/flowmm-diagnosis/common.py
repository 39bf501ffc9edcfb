import numpy as np, torch
from scipy.spatial import cKDTree
from c2np.training.predict import load_module
from c2np.training.data import load_records, collate_task1
from c2np.store.dataset import open_dataset
torch.set_num_threads(1)
CKPT = "/work/flowmm-wt/results/learned/runs/flowmm-task1-seed0/best.ckpt"

def load(ckpt=CKPT):
    m = load_module(ckpt, "cpu").model
    m.eval()
    return m

def record(R, material="BaAlH3"):
    ds = open_dataset("/work/main/c2np-store")
    for split in ("id", "ood"):
        try:
            recs = load_records(ds, split, materials=[material], radii=[R])
            return recs[0]
        except ValueError:
            pass
    raise ValueError(R)

def batch_of(rec):
    return collate_task1([(rec, -1)])

def nnstats(x):
    x = np.asarray(x, np.float64)
    d = cKDTree(x).query(x, k=2)[0][:, 1]
    return float(np.median(d)), float((d < 0.5).mean())

def rg(x):
    x = np.asarray(x); return float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))

def occupancy(x, sites):
    """fraction of generated atoms sharing their nearest reference site with another atom,
    median distance to nearest site, fraction of sites empty"""
    d, j = cKDTree(sites).query(np.asarray(x, np.float64))
    cnt = np.bincount(j, minlength=len(sites))
    return float((cnt[j] > 1).mean()), float(np.median(d)), float((cnt == 0).mean())

def bayes_pred(x, sites, k, R):
    """per-atom Bayes-optimal (x_base - x_data)/R given only the atom's own x_t, with the
    data site uniform over the reference sites and the base uniform in the ball (R):
    posterior over sites d ~ 1[|x - (1-k) d| <= k R]."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    if k >= 1.0 - 1e-9:
        return (x - sites.mean(0)) / R  # E[b - d | x] with b = x
    tree = cKDTree(sites)
    scale = 1 - k
    for s in range(0, len(x), 512):
        xs = x[s:s + 512]
        lists = tree.query_ball_point(xs / scale, k * R / scale)
        for i, lst in enumerate(lists):
            if len(lst) == 0:
                lst = [tree.query(xs[i] / scale)[1]]
            d = sites[lst].mean(0)
            b = (xs[i] - scale * d) / max(k, 1e-12)
            out[s + i] = (b - d) / R
    return out
