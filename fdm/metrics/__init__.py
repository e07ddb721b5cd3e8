"""Evaluation metrics (numpy, host-side)."""
