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


# Robustness (issue 18): overlaps, Praat's encodings and short format, NeMo's per-utterance CTM folders ---------
def _triples(al):
    return [(w, round(float(s), 6), round(float(e), 6)) for w, s, e in zip(al.words, al.starts, al.ends)]


def test_overlapping_words_are_rejected_beyond_the_tolerance():
    from megatron_spirit.data.alignments import OVERLAP_TOLERANCE, Alignment

    # The case found by hand: "o'clock" starts at 1.26 s, before "nine" ends at 1.355 s.
    al = Alignment.from_triples([("at", 0.8, 1.0), ("nine", 1.0, 1.355), ("o'clock", 1.26, 1.8)])
    with pytest.raises(AlignmentError, match="overlapping_words") as e:
        check_alignment(al, duration=2.0)
    assert e.value.reason == "overlapping_words" and "o'clock" in str(e.value) and "1.355" in str(e.value)
    # Aligners' rounding (a shared boundary, or an overlap inside the tolerance) is fine.
    ok = Alignment.from_triples([("at", 0.8, 1.0), ("nine", 1.0, 1.3 + OVERLAP_TOLERANCE / 2), ("o'clock", 1.3, 1.8)])
    check_alignment(ok, duration=2.0)


def _praat_textgrid(path, fmt):
    textgrid = pytest.importorskip("praatio.textgrid")
    from praatio.data_classes.interval_tier import IntervalTier
    from praatio.data_classes.point_tier import PointTier

    tg = textgrid.Textgrid()
    tg.addTier(PointTier("events", [(0.5, "x")], 0, 1.5))  # a point tier first: it must be skipped
    tg.addTier(IntervalTier("words", [(s, e, w) for w, s, e in WORDS] + [(1.3, 1.45, "Zoë's")], 0, 1.5))
    tg.addTier(IntervalTier("phones", [(0.12, 0.2, "DH")], 0, 1.5))
    tg.save(str(path), format=fmt, includeBlankSpaces=True)
    return path


@pytest.mark.parametrize("fmt", ["long_textgrid", "short_textgrid"])
def test_praat_formats_and_utf16(tmp_path, fmt):
    """Praat writes long or short text TextGrids, in UTF-16 when a label is not ASCII: all four read alike."""
    path = _praat_textgrid(tmp_path / "a.TextGrid", fmt)
    want = [("the", 0.12, 0.3), ("cat's", 0.3, 0.71), ("hat", 0.9, 1.25), ("zoë's", 1.3, 1.45)]
    assert _triples(read_textgrid(path)) == want
    utf16 = tmp_path / "b.TextGrid"
    utf16.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))  # with its BOM, as Praat saves
    assert utf16.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    assert _triples(read_textgrid(utf16)) == want
    assert _triples(AlignmentSource(tmp_path).get("b")) == want


def test_undecodable_alignment_names_the_file(tmp_path):
    bad = tmp_path / "u1.TextGrid"
    bad.write_bytes(_textgrid(WORDS).replace("cat's", "caf\xe9").encode("latin-1"))
    with pytest.raises(AlignmentError, match=r"u1\.TextGrid: not UTF-8 or UTF-16 text \(byte \d+"):
        read_textgrid(bad)
    with pytest.raises(AlignmentError, match="u1.TextGrid"):
        AlignmentSource(tmp_path).get("u1")


def test_malformed_short_textgrid_is_a_clear_error(tmp_path):
    path = _praat_textgrid(tmp_path / "a.TextGrid", "short_textgrid")
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2])
    with pytest.raises(AlignmentError, match="a.TextGrid: malformed short-format TextGrid"):
        read_textgrid(path)


def _nemo_ctm(utt, words):
    # NeMo forced aligner's word CTM: "<utt> 1 <start> <duration> <word> NA lex NA", blanks as <b>.
    lines = [f"{utt} 1 0.00 0.12 <b> NA lex NA"]
    lines += [f"{utt} 1 {s:.2f} {e - s:.2f} {w} NA lex NA" for w, s, e in words]
    return "\n".join(lines) + "\n"


def test_folder_of_per_utterance_ctms(tmp_path):
    """NeMo's aligner writes ``OUT/ctm/words/<utt>.ctm``, one file per utterance named after its audio."""
    words = tmp_path / "nfa_out" / "ctm" / "words"
    words.mkdir(parents=True)
    (words / "u1.ctm").write_text(_nemo_ctm("u1", WORDS))
    (words / "u2.ctm").write_text(_nemo_ctm("speaker-7_u2", WORDS[:2]))  # utt named after the audio file
    (words / "u3.ctm").write_text(_nemo_ctm("a", WORDS) + _nemo_ctm("b", WORDS))
    want = [("the", 0.12, 0.3), ("cat's", 0.3, 0.71), ("hat", 0.9, 1.25)]
    for root in (tmp_path / "nfa_out", words):  # the aligner's output folder, or its words folder
        src = AlignmentSource(root)
        assert _triples(src.get("u1")) == want
        assert _triples(src.get("u2")) == want[:2]
        assert src.get("missing") is None
        with pytest.raises(AlignmentError, match="u3.ctm: holds 2 utterances, none named 'u3'"):
            src.get("u3")
