"""Training and prediction of the learned baselines (PyTorch Lightning)."""
