"""Continued pretraining: config, GPT datasets and per-step batches, the loop, signals and metrics."""
