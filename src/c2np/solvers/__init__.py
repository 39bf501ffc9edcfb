"""Reference solvers: the analytic ceiling, template memorisation and trivial baselines."""
