"""Shell-mean radial component (along x_t/|x_t|) of target, network, and the exact
uniform-ball field, teacher-forced as in training: python radial.py R"""
import sys; sys.argv += [] ; sys.path.insert(0, "/work/flowmm-wt-scratch")
R = int(sys.argv[1])
src = open("/work/flowmm-wt-scratch/resume.py").read()
uf = src[src.index("def uniform_field"):src.index("def shell_correct")]
from common import *
from c2np.models.flowmm import _uniform_ball
exec(uf)
model = load(); rec = record(R); batch = batch_of(rec)
edges = [0, 0.5, 0.75, 0.9, 1.01]
print("R=%d shells |x_t|/R: %s ; entries target/net/uniform-field (normalised units)" % (R, edges))
torch.manual_seed(0)
with torch.no_grad(), model.averaged_weights():
    cond = model.cell_condition(batch)
    for tv in [0.95, 0.8, 0.6, 0.4, 0.2]:
        t = torch.full((1,), tv); k = float(model.interpolant(t)[0])
        base = _uniform_ball(batch.radius[batch.batch]); xt = (1 - k) * batch.pos + k * base
        out = model.displacement(batch, xt, cond, t).numpy(); tg = ((base - batch.pos) / R).numpy()
        x = xt.numpy(); r = np.linalg.norm(x, axis=1); u = x / r[:, None]
        un = uniform_field(x, k, R)
        row = []
        for a, b in zip(edges[:-1], edges[1:]):
            m = (r / R >= a) & (r / R < b)
            row.append("%+.2f/%+.2f/%+.2f" % tuple(((v * u).sum(1)[m].mean()) for v in (tg, out, un)))
        print("t=%.2f  " % tv + "   ".join(row), flush=True)
