"""Learned baselines (needs ``pip install c2np[torch]``): shared components and the model
families. ``MODELS[name][task]`` is the class; configs live in ``c2np/training/configs``."""

from c2np.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
