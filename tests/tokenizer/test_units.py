"""Unit strings: dedup, the EXPRESSIVE merge (docs/spec.md §2), the reverse parse, vectorised ids."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_spirit.tokenizer.units import (
    dedup,
    merge_units,
    stream_ids,
    stream_string,
    string_to_units,
    units_to_string,
)
from megatron_spirit.tokenizer.vocab import HUBERT, PITCH, STYLE, SpiritVocab

RELEASE = "[St81][Hu78][Pi13][Hu42][Hu81][Hu159][Hu316][Pi3][Hu259]"


def test_release_example_merges_exactly():
    s = units_to_string("78 42 81 159 316 259", "13 13 13 13 13 3", "81 81 81 81 81 81", aligned=True)
    assert s == RELEASE


def test_release_example_parses_back():
    assert string_to_units(RELEASE) == {
        "hubert": [78, 42, 81, 159, 316, 259],
        "pitch": [13, 13, 13, 13, 13, 3],
        "style": [81, 81, 81, 81, 81, 81],
    }


def test_native_rates_follow_time():
    # 25 Hz HuBERT (0.04 s), 12.5 Hz pitch (0.08 s), 1 Hz style: 2 s of speech.
    hubert = np.arange(50) % 7  # no consecutive repeats
    pitch = np.repeat([5, 6], [13, 12])
    style = [3, 4]
    merged = merge_units(hubert, pitch, style)
    assert np.all(np.diff(merged.time) >= 0)
    s = merged.string()
    assert s.startswith("[St3][Pi5][Hu0]")
    # Pi6 starts at frame 13 of pitch = 1.04 s: after HuBERT frame 25 (1.0004 s) and St4 (1.0 s).
    toks = s.replace("][", "] [").split()
    hu_before = lambda tok: sum(t.startswith("[Hu") for t in toks[: toks.index(tok)])  # noqa: E731
    # St4 at 1.0 s follows HuBERT frames 0..24 (frame 25 is at 25/24.99 s); Pi6 at 1.04 s follows frames 0..25.
    assert hu_before("[St4]") == 25 and hu_before("[Pi6]") == 26
    assert toks.count("[St3]") == 1 and toks.count("[Pi5]") == 1 and len(toks) == 50 + 2 + 2


def test_dedup_keeps_run_starts():
    units, idx = dedup(np.array([4, 4, 4, 9, 9, 4, 1, 1]))
    assert units.tolist() == [4, 9, 4, 1] and idx.tolist() == [0, 3, 5, 6]
    assert stream_string([4, 4, 9], HUBERT) == "[Hu4][Hu9]"
    assert stream_string([4, 4, 9], STYLE) == "[St4][St4][St9]"  # style is not deduplicated


def test_stream_ids_are_vectorised_and_checked():
    v = SpiritVocab(32000)
    assert stream_ids(v, [0, 0, 500], HUBERT).tolist() == [32002, 32502]
    assert stream_ids(v, [63], PITCH).tolist() == [32566]
    with pytest.raises(ValueError, match="hubert unit 501"):
        stream_ids(v, [1, 501], HUBERT)
    with pytest.raises(ValueError, match="style unit 100"):
        units_to_string([1], style=[100])


def test_merged_ids_match_string():
    v = SpiritVocab(32000)
    m = merge_units([1, 2, 3], [7, 8], [9])
    assert m.ids(v).tolist() == [v.token_to_id[t] for t in m.string().replace("][", "] [").split()]


def test_aligned_length_mismatch():
    with pytest.raises(ValueError, match="aligned pitch stream has 2 units for 3 HuBERT frames"):
        merge_units([1, 2, 3], [1, 2], aligned=True)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 63), st.integers(0, 99)), min_size=1, max_size=60)
)
def test_aligned_round_trip(frames):
    """Parsing a merged aligned stream gives back each (deduplicated) HuBERT unit with its pitch and style."""
    hu = np.array([f[0] for f in frames])
    keep = np.ones(len(hu), bool)
    keep[1:] = hu[1:] != hu[:-1]
    frames = [f for f, k in zip(frames, keep) if k]  # aligned streams carry one entry per kept HuBERT unit
    hubert, pitch, style = (list(x) for x in zip(*frames))
    s = units_to_string(hubert, pitch, style, aligned=True)
    assert string_to_units(s) == {"hubert": hubert, "pitch": pitch, "style": style}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=0, max_size=80))
def test_base_round_trip(hubert):
    s = units_to_string(hubert)
    assert string_to_units(s)["hubert"] == dedup(np.array(hubert, dtype=np.int64))[0].tolist()
