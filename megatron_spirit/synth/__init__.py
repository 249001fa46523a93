"""Synthetic corpora for demos and tests, where real weights and datasets cannot be downloaded."""
