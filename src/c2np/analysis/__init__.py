"""Dataset analysis: statistics, figures and the interactive viewer (docs/dataset.md)."""
