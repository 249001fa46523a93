"""Style units: encoder features mean-pooled over 1 s windows, quantized by a 100-way k-means (1 Hz).

The default encoder is the HuBERT folder already used for phonetic units (no extra weights needed), at a
middle layer where speaker and prosody are still present; any ``HubertModel``-compatible folder works.
Window ``j`` pools HuBERT frames ``[j w, (j + 1) w)`` with ``w = round(window_seconds × rate)`` (25 frames):
style unit ``j`` covers ``manifest.frame_span(j, 1 / window_seconds)``; the last window may be partial.
"""
from __future__ import annotations

import numpy as np

from .kmeans import KMeansQuantizer

#: Style features' default HuBERT layer: middle layers keep more speaker/prosody than layer 11.
DEFAULT_STYLE_LAYER = 6


def frames_per_window(rate: float, window_seconds: float) -> int:
    w = int(round(rate * window_seconds))
    if w < 1:
        raise ValueError(f"a {window_seconds} s window holds no frame at {rate} Hz")
    return w


def pool_windows(feats: np.ndarray, window: int) -> np.ndarray:
    """(T, D) → (ceil(T / window), D): the mean of each window (the last one possibly shorter)."""
    t, d = feats.shape
    n = -(-t // window)
    if n == 0:
        return np.zeros((0, d), np.float32)
    padded = np.zeros((n * window, d), np.float64)
    padded[:t] = feats
    counts = np.full(n, window, np.float64)
    counts[-1] = t - (n - 1) * window
    return (padded.reshape(n, window, d).sum(1) / counts[:, None]).astype(np.float32)


def style_units(quantizer: KMeansQuantizer, feats: np.ndarray, rate: float) -> np.ndarray:
    """Style units of one utterance from its encoder features at ``rate`` Hz."""
    if quantizer.meta.window_seconds <= 0:
        raise ValueError("this k-means is not a style quantizer (no pooling window in its metadata)")
    pooled = pool_windows(feats, frames_per_window(rate, quantizer.meta.window_seconds))
    return quantizer(pooled) if len(pooled) else np.zeros(0, np.int64)
