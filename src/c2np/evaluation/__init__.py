"""Scoring predictions: prediction files, validation and the Evaluator."""
