"""Style units: windows of HuBERT frames mean-pooled, one unit per second."""
import numpy as np
import pytest

from megatron_spirit.speech.kmeans import KMeansMeta, KMeansQuantizer
from megatron_spirit.speech.style import frames_per_window, pool_windows, style_units


def test_pool_windows_last_window_partial():
    x = np.arange(7, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    p = pool_windows(x, 3)
    assert p.shape == (3, 2) and p[:, 0].tolist() == [1.0, 4.0, 6.0]
    assert pool_windows(np.zeros((0, 4), np.float32), 3).shape == (0, 4)


def test_style_units_one_per_second():
    q = KMeansQuantizer(np.array([[0.0], [10.0]], np.float32), KMeansMeta(layer=6, rate=1.0, window_seconds=1.0))
    feats = np.concatenate([np.zeros((25, 1)), np.full((25, 1), 9.0), np.zeros((3, 1))]).astype(np.float32)
    assert frames_per_window(25.0, 1.0) == 25
    assert style_units(q, feats, 25.0).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="not a style quantizer"):
        style_units(KMeansQuantizer(np.zeros((2, 1), np.float32), KMeansMeta()), feats, 25.0)
