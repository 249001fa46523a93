"""Continued pretraining: config, data, the loop, checkpoints, signals and metrics."""
