"""HuBERT features: the 25 Hz frame convention, and units identical alone or in a padded batch."""
import numpy as np
import pytest
import torch

from megatron_spirit.speech.hubert import ConvGeometry, HubertFeaturizer
from megatron_spirit.speech.kmeans import KMeansMeta, train_kmeans
from megatron_spirit.speech.manifest import frame_span


@pytest.fixture(scope="module")
def featurizer(tiny_hubert_dir):
    return HubertFeaturizer(tiny_hubert_dir, layers=(1, 2), device="cpu")


def _wavs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def test_frame_convention_on_known_lengths(featurizer):
    g = featurizer.geometry
    assert g == ConvGeometry(hop=640, receptive_field=720)  # kernels 10,3,3,3,3,2,2,2; strides 5,2,…,2
    assert featurizer.rate == 25.0
    # The model's own length formula agrees, and 1 s gives 24 whole frames (the 25th needs 80 more samples).
    for n in (720, 1359, 1360, 16000, 16000 + g.receptive_field - g.hop, 12345):
        assert featurizer.num_frames(n) == int(featurizer.model._get_feat_extract_output_lengths(n))
        assert len(featurizer([_wavs([n])[0]])[0][2]) == featurizer.num_frames(n)
    assert featurizer.num_frames(16000) == 24
    assert featurizer.num_frames(16000 + g.receptive_field - g.hop) == 25
    assert featurizer.num_frames(719) == 0
    # Frame i starts at sample i*hop: after the conv stack, zeroing the audio from sample s on leaves exactly
    # the frames whose receptive field [i*hop, i*hop + rf) ends at or before s unchanged.
    wav = _wavs([8000])[0]
    s = 640 * 5 + 100
    other = wav.copy()
    other[s:] = 0.0
    layer0 = featurizer.model.feature_extractor.conv_layers[0].conv
    h0, h1 = torch.from_numpy(wav)[None, None], torch.from_numpy(other)[None, None]
    with torch.no_grad():  # the stack without its utterance-wide GroupNorm, which would spread any change
        for layer in featurizer.model.feature_extractor.conv_layers:
            h0, h1 = layer.activation(layer.conv(h0)), layer.activation(layer.conv(h1))
    changed = ((h0 - h1).abs().amax(1)[0] > 0).nonzero()[:, 0]
    assert changed[0].item() == (s - g.receptive_field) // g.hop + 1
    assert layer0.stride[0] == 5
    start, end = frame_span(5, featurizer.rate)
    assert (start, end) == pytest.approx((5 * 640 / 16000, 6 * 640 / 16000))


def test_units_same_alone_or_in_a_padded_batch(featurizer):
    wavs = _wavs([16000, 5000, 23456, 1200, 9000], seed=1)
    alone = [featurizer([w])[0] for w in wavs]
    batch = featurizer(wavs)
    feats = np.concatenate([a[2] for a in alone])
    km = train_kmeans(feats, 8, KMeansMeta(layer=2), niter=5)
    for a, b in zip(alone, batch):
        assert a[2].shape == b[2].shape
        np.testing.assert_allclose(a[2], b[2], atol=1e-4)
        assert km(a[2]).tolist() == km(b[2]).tolist()


def test_plain_padded_forward_would_leak(featurizer):
    """Why the masked norm exists: HF's own padded forward changes a short utterance's features."""
    wavs = _wavs([16000, 6000], seed=2)
    x = torch.zeros(2, 16000)
    x[0], x[1, :6000] = torch.from_numpy(wavs[0]), torch.from_numpy(wavs[1])
    mask = torch.zeros(2, 16000, dtype=torch.long)
    mask[0], mask[1, :6000] = 1, 1
    with torch.no_grad():
        hf = featurizer.model(x, attention_mask=mask).last_hidden_state[1, : featurizer.num_frames(6000)]
    ours = featurizer([wavs[1]])[0][2]
    assert np.abs(hf.numpy() - ours).max() > 1e-2


def test_chunking_keeps_frame_count_and_timing(tiny_hubert_dir):
    chunked = HubertFeaturizer(tiny_hubert_dir, layers=(2,), device="cpu", max_chunk_seconds=0.4)
    whole = HubertFeaturizer(tiny_hubert_dir, layers=(2,), device="cpu")
    for n in (16000, 16000 + 640 * 3 + 17, 6400):
        w = _wavs([n], seed=n)[0]
        a, b = chunked([w])[0][2], whole([w])[0][2]
        assert a.shape == b.shape == (whole.num_frames(n), 32)


def test_model_calls_are_bounded(tiny_hubert_dir):
    """A long file's chunks, or a big batch, are split into model calls of bounded padded size: same features."""
    small = HubertFeaturizer(tiny_hubert_dir, layers=(2,), device="cpu", max_chunk_seconds=0.4, max_batch_seconds=0.8)
    calls = []
    inner = small._batch
    small._batch = lambda wavs: calls.append(sum(map(len, wavs))) or inner(wavs)
    big = HubertFeaturizer(tiny_hubert_dir, layers=(2,), device="cpu", max_chunk_seconds=0.4)
    wavs = _wavs([40000, 7000, 3000], seed=5)
    a, b = small(wavs), big(wavs)
    assert len(calls) > 2 and max(calls) <= 0.8 * 16000
    for x, y in zip(a, b):
        np.testing.assert_allclose(x[2], y[2], atol=1e-4)
