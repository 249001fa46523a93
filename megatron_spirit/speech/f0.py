"""F0 tracking for the pitch units: pYAAPT (the paper's tracker) or a vectorised autocorrelation tracker.

Numpy only (no torch), so unit extraction can run the slow tracker in worker processes that start quickly.
"""
from __future__ import annotations

import math

import numpy as np

from .audio import SAMPLE_RATE

METHODS = ("yaapt", "acf")


def extract_f0(wav: np.ndarray, method: str = "yaapt", hop: int = 80, f0_min: float = 50.0,
               f0_max: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    """F0 in Hz (0 where unvoiced) and the voiced flag, ``len(wav) // hop`` frames; frame i is centred at i·hop."""
    n = len(wav) // hop
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    if method == "yaapt":
        f0 = _yaapt(wav, hop, f0_min, f0_max)
    elif method == "acf":
        f0 = _acf(wav, hop, f0_min, f0_max)
    else:
        raise ValueError(f"unknown F0 method {method!r}")
    f0 = np.nan_to_num(np.asarray(f0, dtype=np.float32))
    f0 = f0[:n] if len(f0) >= n else np.pad(f0, (0, n - len(f0)))
    return f0, f0 > 0


def _yaapt(wav: np.ndarray, hop: int, f0_min: float, f0_max: float) -> np.ndarray:
    import amfm_decompy.basic_tools as basic
    import amfm_decompy.pYAAPT as pYAAPT

    frame_ms = 20.0
    pad = int(frame_ms / 1000 * SAMPLE_RATE) // 2  # so that frame i is centred at sample i·hop
    sig = basic.SignalObj(np.pad(wav.astype(np.float64), (pad, pad)), SAMPLE_RATE)
    p = pYAAPT.yaapt(sig, frame_length=frame_ms, tda_frame_length=25.0, frame_space=1000.0 * hop / SAMPLE_RATE,
                     nccf_thresh1=0.25, f0_min=f0_min, f0_max=f0_max)
    return p.samp_values


def _acf(wav: np.ndarray, hop: int, f0_min: float, f0_max: float, threshold: float = 0.6,
         block: int = 4000) -> np.ndarray:
    """Normalised autocorrelation per frame (FFT, ``block`` frames at a time to bound memory on long files)."""
    max_lag = int(math.ceil(SAMPLE_RATE / f0_min))
    win = 2 * max_lag
    n = len(wav) // hop
    x = np.pad(wav.astype(np.float32), (win // 2, win // 2 + hop))
    floor = 1e-3 * max(1e-9, float(np.abs(wav).max())) + 1e-5
    return np.concatenate([_acf_frames(x, np.arange(a, min(n, a + block)), hop, f0_min, f0_max, threshold, floor)
                           for a in range(0, n, block)]) if n else np.zeros(0)


def _acf_frames(x: np.ndarray, which: np.ndarray, hop: int, f0_min: float, f0_max: float, threshold: float,
                floor: float) -> np.ndarray:
    """F0 of frames ``which`` of the padded signal ``x``; the first lag near the best peak wins."""
    max_lag = int(math.ceil(SAMPLE_RATE / f0_min))
    min_lag = max(2, int(SAMPLE_RATE / f0_max))
    win = 2 * max_lag
    n = len(which)
    idx = which[:, None] * hop + np.arange(win)[None, :]
    frames = x[idx]
    frames = frames - frames.mean(1, keepdims=True)
    spec = np.fft.rfft(frames, 2 * win, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : max_lag + 2]
    # Energy of the two overlapping parts x[τ:] and x[:W-τ]: a normalisation that does not favour short lags.
    sq0 = np.concatenate([np.zeros((n, 1), np.float64), np.cumsum(frames.astype(np.float64) ** 2, axis=1)], 1)
    total = sq0[:, -1:]
    lags = np.arange(max_lag + 2)
    head = total - sq0[:, lags]
    tail = sq0[:, win - lags]
    nacf = ac / np.sqrt(np.maximum(head * tail, 1e-12))
    band = nacf[:, min_lag: max_lag + 1]
    best = band.max(1)
    # The smallest lag whose value is within 10% of the best: avoids octave-low errors on periodic signals.
    cand = band >= 0.9 * best[:, None]
    lag = cand.argmax(1)
    # Walk to the local peak from that first candidate, then refine by a parabola.
    rows = np.arange(n)
    for _ in range(band.shape[1]):
        nxt = np.minimum(lag + 1, band.shape[1] - 1)
        move = band[rows, nxt] > band[rows, lag]
        if not move.any():
            break
        lag = np.where(move, nxt, lag)
    i = np.clip(lag, 1, band.shape[1] - 2)
    a, b, c = band[np.arange(n), i - 1], band[np.arange(n), i], band[np.arange(n), i + 1]
    den = a - 2 * b + c
    shift = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1), 0.0)
    period = i + min_lag + np.clip(shift, -1, 1)
    rms = np.sqrt(total[:, 0] / win)
    voiced = (best > threshold) & (rms > floor)
    return np.where(voiced, SAMPLE_RATE / period, 0.0)
