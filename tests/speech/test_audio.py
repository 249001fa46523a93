"""Audio reading: mono, 16 kHz, and every kind of bad file rejected with a reason."""
import numpy as np
import pytest
import soundfile as sf

from megatron_spirit.speech.audio import AudioError, audio_duration, chunk_bounds, load_audio

from .signals import tone


def test_stereo_is_averaged_and_resampled(tmp_path):
    left, right = tone(440, 1.0, sr=22050), np.zeros(22050, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 22050)
    wav = load_audio(tmp_path / "s.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 16000
    assert 0.12 < np.abs(wav).max() < 0.18  # half of 0.3: the silent channel was averaged in
    assert audio_duration(tmp_path / "s.wav") == pytest.approx(1.0)


@pytest.mark.parametrize("case, reason", [
    ("missing", "missing file"),
    ("corrupt", "unreadable"),
    ("empty", "zero-length"),
    ("nan", "NaN"),
    ("short", "too short"),
    ("rate", "wrong sample rate"),
    ("truncated", "truncated"),
])
def test_bad_files_have_reasons(tmp_path, case, reason):
    p = tmp_path / f"{case}.wav"
    kw = {}
    if case == "corrupt":
        p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 3)
    elif case == "empty":
        sf.write(p, np.zeros(0, np.float32), 16000)
    elif case == "nan":
        x = tone(200, 0.5)
        x[100] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    elif case == "short":
        sf.write(p, tone(200, 0.01), 16000)
        kw["min_samples"] = 400
    elif case == "rate":
        sf.write(p, tone(200, 0.5, sr=8000), 8000)
        kw["expected_rate"] = 16000
    elif case == "truncated":
        sf.write(p, tone(200, 1.0), 16000)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])  # header still promises 1 s
        kw["expected_duration"] = 1.0
    with pytest.raises(AudioError, match=reason) as e:
        load_audio(p, **kw)
    assert str(p) in str(e.value)


def test_chunks_start_on_the_grid_and_overlap():
    assert chunk_bounds(1000, 400, overlap=50, min_piece=100) == [(0, 450), (400, 850), (800, 1000)]
    assert chunk_bounds(830, 400, overlap=50, min_piece=100) == [(0, 450), (400, 830)]  # 30-sample tail dropped
    assert chunk_bounds(300, 400, overlap=50) == [(0, 300)]
