"""Word alignments from TextGrid, CTM and JSON reach one normalised form; bad ones are caught with a reason."""
import json

import numpy as np
import pytest

from megatron_spirit.data.alignments import (
    AlignmentError,
    AlignmentSource,
    check_alignment,
    normalize_text,
    normalize_word,
    normalize_words,
    read_textgrid,
)

WORDS = [("The", 0.12, 0.30), ("cat's", 0.30, 0.71), ("hat.", 0.90, 1.25)]


def _textgrid(words, xmax=1.5):
    intervals = []
    t = 0.0
    for w, s, e in words:
        if s > t:
            intervals.append(("", t, s))
        intervals.append((w, s, e))
        t = e
    intervals.append(("", t, xmax))
    body = "".join(
        f"            intervals [{k}]:\n                xmin = {s}\n                xmax = {e}\n"
        f'                text = "{w}"\n'
        for k, (w, s, e) in enumerate(intervals, 1)
    )
    phones = ('    item [2]:\n        class = "IntervalTier"\n        name = "phones"\n        xmin = 0\n'
              f'        xmax = {xmax}\n        intervals: size = 1\n            intervals [1]:\n'
              f'                xmin = 0\n                xmax = {xmax}\n                text = "AH0"\n')
    return (
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\n'
        f"xmax = {xmax}\ntiers? <exists>\nsize = 2\nitem []:\n"
        f'    item [1]:\n        class = "IntervalTier"\n        name = "words"\n        xmin = 0\n'
        f"        xmax = {xmax}\n        intervals: size = {len(intervals)}\n{body}{phones}"
    )


def test_normalisation():
    assert normalize_text("Hello, World!  It's  — 'quoted' x-ray") == ["hello", "world", "it's", "quoted", "xray"]


def test_batch_normalisation_equals_per_word():
    import random

    rng = random.Random(0)
    alphabet = "abcXYZ019'-.,!?\"()[]<>é ÉßİΣ—…\x1f\t"
    for _ in range(300):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(0, 8))]
        assert normalize_words(words) == [normalize_word(w) for w in words], words


def test_three_formats_agree(tmp_path):
    (tmp_path / "tg").mkdir()
    (tmp_path / "tg" / "u1.TextGrid").write_text(_textgrid(WORDS))
    ctm = "".join(f"u1 1 {s:.2f} {e - s:.2f} {w} 0.9\n" for w, s, e in WORDS) + "u1 1 1.30 0.05 <b> NA\n"
    (tmp_path / "a.ctm").write_text(";; comment\n" + ctm)
    (tmp_path / "a.json").write_text(json.dumps({"u1": [{"word": w, "start": s, "end": e} for w, s, e in WORDS]}))
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "u1", "words": [[w, s, e] for w, s, e in WORDS]}) + "\n")
    results = [AlignmentSource(tmp_path / p).get("u1") for p in ("tg", "a.ctm", "a.json", "a.jsonl")]
    for al in results:
        assert al.words == ("the", "cat's", "hat")
        assert np.allclose(al.starts, [0.12, 0.30, 0.90]) and np.allclose(al.ends, [0.30, 0.71, 1.25])
    assert AlignmentSource(tmp_path / "tg").get("nope") is None
    assert AlignmentSource(tmp_path / "a.ctm").ids() == {"u1"}


def test_textgrid_errors(tmp_path):
    bad = tmp_path / "x.TextGrid"
    bad.write_text("not a textgrid")
    with pytest.raises(AlignmentError, match="not a Praat TextGrid"):
        read_textgrid(bad)


@pytest.mark.parametrize(
    "words, duration, transcript, reason",
    [
        (WORDS, 1.3, "the cat's hat", None),
        (WORDS, 1.3, "The cat's HAT!", None),
        (WORDS, 1.3, "the cat's bat", "alignment_mismatch"),
        (WORDS, 1.3, "the cat's hat too", "alignment_mismatch"),
        (WORDS, 1.0, None, "times_beyond_audio"),
        ([("a", 0.5, 0.4)], 1.0, None, "bad_times"),
        ([("a", 0.5, 0.6), ("b", 0.2, 0.3)], 1.0, None, "bad_times"),
        ([("sil", 0.0, 0.3)], 1.0, None, "empty_alignment"),
    ],
)
def test_check_alignment(words, duration, transcript, reason):
    from megatron_spirit.data.alignments import Alignment

    al = Alignment.from_triples(words)
    if reason is None:
        check_alignment(al, duration, transcript)
    else:
        with pytest.raises(AlignmentError) as e:
            check_alignment(al, duration, transcript)
        assert e.value.reason == reason


@pytest.mark.parametrize("words", [[{"word": "a", "start": 0, "end": 1}, {"word": 5, "start": 1, "end": 2}],
                                   [["a", 0, 1], ["b", "x", 2]], [{"word": "a", "start": 0}]])
def test_malformed_word_lists_name_the_entry(words):
    from megatron_spirit.data.alignments import parse_word_list

    with pytest.raises(AlignmentError, match=r"m\.json: word entry \d is malformed"):
        parse_word_list(words, "m.json")
