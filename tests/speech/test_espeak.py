"""espeak-ng synthesis through libespeak-ng: 16 kHz audio and word times that match the signal."""
import json

import numpy as np
import pytest
import soundfile as sf

from megatron_spirit.synth.espeak import SAMPLE_RATE, synthesize


def _rms(audio, start, end):
    seg = audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)]
    return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0


def test_word_times_cover_the_speech():
    s = synthesize("The cat sat in the house, for the good of all.")
    assert [w.word for w in s.words] == "the cat sat in the house for the good of all".split()
    starts = [w.start for w in s.words]
    assert starts == sorted(starts) and all(w.end > w.start for w in s.words)  # merged pairs split too
    assert s.words[-1].end <= s.duration + 1e-6
    speech = np.mean([_rms(s.audio, w.start, w.end) for w in s.words])
    # The comma's pause between "house" and "for" is quiet; the words are not.
    gap = (s.words[5].end + 0.02, s.words[6].start - 0.02)
    assert gap[1] - gap[0] > 0.05 and _rms(s.audio, *gap) < 0.1 * speech
    assert min(_rms(s.audio, w.start, w.end) for w in s.words) > 0.2 * speech


def test_voices_differ_in_pitch():
    low = synthesize("hello there my friend", voice="en-us", pitch=20)
    high = synthesize("hello there my friend", voice="en-us", pitch=90)
    from megatron_spirit.speech.pitch import extract_f0

    f_low, v_low = extract_f0(low.audio, "acf")
    f_high, v_high = extract_f0(high.audio, "acf")
    assert np.median(f_high[v_high]) > 1.2 * np.median(f_low[v_low])


def test_bad_voice_and_empty_text():
    with pytest.raises(ValueError, match="no voice"):
        synthesize("hello", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="nothing to say"):
        synthesize("...")


def test_corpus_manifest(espeak_corpus):
    recs = [json.loads(line) for line in espeak_corpus.read_text().splitlines()]
    assert len(recs) == 8 and len({r["speaker"] for r in recs}) == 4
    for r in recs:
        info = sf.info(r["path"])
        assert info.samplerate == 16000
        assert len(r["alignment"]) == len(r["text"].split())
        assert r["alignment"][-1][2] <= info.duration + 1e-3
