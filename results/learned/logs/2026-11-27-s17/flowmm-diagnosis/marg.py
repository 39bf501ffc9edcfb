"""x_t statistics of the training marginal (true particle + uniform-ball base): python marg.py R"""
import sys; sys.path.insert(0, "/work/flowmm-wt-scratch")
from common import *
R = int(sys.argv[1]); rec = record(R); d = rec.positions
rng = np.random.default_rng(0)
v = rng.normal(size=d.shape); v /= np.linalg.norm(v, axis=1, keepdims=True); b = v * R * rng.random((len(d), 1)) ** (1 / 3)
for t in [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]:
    k = 1 - np.cos(np.pi * t / 2); x = (1 - k) * d + k * b
    print("R=%d t=%.1f training-marginal x_t: medNN %.3f close<0.5 %.3f Rg %.2f" % (R, t, *nnstats(x), rg(x)))
