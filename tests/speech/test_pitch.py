"""Pitch: F0 on pure tones, the 2-channel features, and a VQ-VAE that reconstructs smooth contours."""
import numpy as np
import pytest

from megatron_spirit.speech.pitch import (
    PitchConfig, PitchData, PitchQuantizer, extract_f0, interpolate_f0, pitch_features, train_pitch_vqvae,
)

from .signals import tone


@pytest.mark.parametrize("freq", [110.0, 220.0, 330.0])
def test_acf_reads_pure_tones(freq):
    f0, voiced = extract_f0(tone(freq, 0.5), "acf")
    assert len(f0) == 0.5 * 16000 // 80
    assert voiced[5:-5].all()
    assert np.median(f0[voiced]) == pytest.approx(freq, rel=0.01)


def test_acf_follows_a_glide_and_marks_silence_unvoiced():
    t = np.arange(32000) / 16000
    freq = 150 + 50 * np.sin(2 * np.pi * 0.7 * t)
    wav = tone(freq, 2.0)
    wav[12000:16000] = 0.0
    f0, voiced = extract_f0(wav, "acf")
    ref = freq[::80]
    assert not voiced[155:195].any()
    ok = voiced.copy()
    ok[145:205] = False  # frames whose window straddles the silence edges
    assert np.median(np.abs(f0[ok] - ref[ok]) / ref[ok]) < 0.03
    # Long files are tracked in blocks of frames (bounded memory): the result does not depend on the block size.
    from megatron_spirit.speech.f0 import _acf

    assert np.array_equal(_acf(wav, 80, 50.0, 500.0, block=37).astype(np.float32), f0)


def test_yaapt_runs_with_the_right_frame_count():
    # pYAAPT misreads pure synthetic tones (docs/notes/espeak-alignments.md): check shape and voicing only.
    f0, voiced = extract_f0(tone(180.0, 0.6), "yaapt")
    assert len(f0) == len(voiced) == 0.6 * 16000 // 80
    assert voiced.mean() > 0.5 and np.all(f0[voiced] > 50)


def test_interpolation_and_features():
    f0 = np.array([0, 100, 0, 0, 400, 0], np.float32)
    v = f0 > 0
    logf = interpolate_f0(f0, v)
    assert np.allclose(np.exp(logf), [100, 100, 100 * 4 ** (1 / 3), 100 * 4 ** (2 / 3), 400, 400], rtol=1e-5)
    x = pitch_features(f0, v, "utterance")
    assert x.shape == (2, 6) and x[1].tolist() == v.astype(float).tolist()
    assert np.isclose(x[0][v].mean(), 0.0, atol=1e-5)
    assert np.allclose(pitch_features(f0, v, "none")[0], logf)
    with pytest.raises(ValueError, match="normalisation"):
        PitchConfig(norm="global")


def _contours(n, rng, length=(200, 600)):
    """F0 tracks read (acf) from numpy tones with smoothly varying pitch and a few silent gaps."""
    out = []
    for _ in range(n):
        frames = int(rng.integers(*length))
        t = np.arange(frames * 80) / 16000
        freq = 140 * np.exp(0.25 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6)))
        wav = tone(freq, len(t) / 16000)
        for _ in range(2):
            s = int(rng.integers(0, len(wav) - 4000))
            wav[s: s + int(rng.integers(800, 3200))] = 0.0
        f0, v = extract_f0(wav, "acf")
        out.append((f0, v, f"spk{len(out) % 2}"))
    return PitchData([c[0] for c in out], [c[1] for c in out], [c[2] for c in out])


def test_vqvae_reconstructs_smooth_contours_better_than_a_constant(tmp_path):
    rng = np.random.default_rng(0)
    train, held = _contours(30, rng), _contours(5, rng, (400, 401))  # 400 F0 frames = 25 units
    cfg = PitchConfig(method="acf", steps=120, batch_size=12, channels=32, code_dim=16, segment=128)
    q = train_pitch_vqvae(train, cfg, held, progress=False)
    m = q.metrics
    assert m["files"] == 5 and m["constant_f0_rmse"] == pytest.approx(1.0, abs=1e-3)
    assert m["f0_rmse"] < 0.5 * m["constant_f0_rmse"]
    feats = q.features_from_f0(held.f0[0], held.voiced[0])
    units = q.encode_features(feats)
    assert len(units) == 25 and units.max() < 64 and len(set(units.tolist())) > 3
    q.save(tmp_path / "p")
    r = PitchQuantizer.load(tmp_path / "p")
    assert r.cfg == cfg and r.metrics == m and r.encode_features(feats).tolist() == units.tolist()


def test_units_follow_the_12_5_hz_grid():
    q = PitchQuantizer(PitchConfig(method="acf", channels=8, code_dim=4), __import__(
        "megatron_spirit.speech.pitch", fromlist=["PitchVQVAE"]).PitchVQVAE(PitchConfig(channels=8, code_dim=4)))
    for seconds in (0.08, 1.0, 1.01, 2.5):
        wav = tone(200.0, seconds)
        assert len(q(wav)) == q.num_frames(len(wav)) == int(np.ceil(len(wav) // 80 / 16))


def test_speaker_normalisation_uses_training_statistics():
    rng = np.random.default_rng(1)
    data = _contours(6, rng)
    cfg = PitchConfig(method="acf", norm="speaker", steps=2, batch_size=2, channels=8, code_dim=4, segment=64)
    q = train_pitch_vqvae(data, cfg, progress=False)
    assert set(q.speaker_stats) == {"spk0", "spk1"}
    st = q.speaker_stats["spk0"]
    x = q.features_from_f0(data.f0[0], data.voiced[0], "spk0")
    logf = np.log(data.f0[0][data.voiced[0]])
    assert np.allclose(x[0][data.voiced[0]], (logf - st.mean) / st.std, atol=1e-4)
