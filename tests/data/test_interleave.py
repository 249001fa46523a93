"""Span sampling follows docs/spec.md §3, and the vectorised builder equals a plain per-utterance reading of the rule
(interleave.py's module doc), token for token, through SpiritTokenizer.encode of the string form."""
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_spirit.data.alignments import parse_word_list
from megatron_spirit.data.interleave import SPEECH, TEXT, SpanConfig, record_keys, sample_spans
from megatron_spirit.data.ragged import Ragged
from megatron_spirit.data.sequences import SequenceConfig, builder_for
from megatron_spirit.data.word_tokens import WordTokens
from megatron_spirit.speech.manifest import UnitsRecord
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

from .corpus import make_corpus


@pytest.mark.parametrize("cfg", [SpanConfig(), SpanConfig(2, 3, 1, 2)])
def test_span_lengths_alternation_and_first_modality(cfg):
    n_words = np.array([1 + k % 97 for k in range(600)])
    spans = sample_spans(n_words, record_keys(7, 0, [f"u{k}" for k in range(600)]), cfg)
    firsts, lengths = [], {TEXT: set(), SPEECH: set()}
    for r, n in enumerate(n_words.tolist()):
        s = slice(*np.searchsorted(spans.record, [r, r + 1]))
        mod, a, b = spans.modality[s].tolist(), spans.first[s].tolist(), spans.end[s].tolist()
        assert (spans.record[s] == r).all()
        assert a[0] == 0 and b[-1] == n
        assert a[1:] == b[:-1]  # contiguous
        assert all(x != y for x, y in zip(mod, mod[1:]))  # alternating
        firsts.append(mod[0])
        for m, x, y in zip(mod[:-1], a, b):  # the last span may be cut by the utterance's end
            lengths[m].add(y - x)
    assert 0.4 < np.mean(firsts) < 0.6  # the first modality is a coin flip
    assert lengths[TEXT] == set(range(cfg.text_min, cfg.text_max + 1))
    assert lengths[SPEECH] == set(range(cfg.speech_min, cfg.speech_max + 1))


def test_bad_span_config():
    with pytest.raises(ValueError, match="text span"):
        SpanConfig(5, 4)


def test_record_keys_independent_of_batch_and_order():
    ids = ["utt7", "utt8", "utt9"]
    together = record_keys(1, 0, ids)
    assert [int(record_keys(1, 0, [i])[0]) for i in ids] == together.tolist()
    assert record_keys(1, 0, ids[::-1]).tolist() == together[::-1].tolist()
    assert (record_keys(1, 1, ids) != together).all() and (record_keys(2, 0, ids) != together).all()


def reference(d: dict, flavor: str, cfg: SpanConfig, seed: int, variant: int) -> str:
    """One utterance, the rule read literally: a speech span holds the units timed in [start of its first word,
    start of the word after it) (from -inf for the first word, to +inf for the last)."""
    rec = UnitsRecord.from_json(d)
    al = parse_word_list(d["words"])
    merged = rec.merged(flavor)
    spans = sample_spans(np.array([len(al)]), record_keys(seed, variant, [rec.id]), cfg)
    edges = np.concatenate([[-np.inf], al.starts[1:], [np.inf]])
    segs = []  # [modality, first word, end word, unit string]
    for m, a, b in zip(spans.modality.tolist(), spans.first.tolist(), spans.end.tolist()):
        units = merged.slice_time(edges[a], edges[b])
        if m == SPEECH and len(units) == 0:
            m = TEXT
        if segs and segs[-1][0] == TEXT and m == TEXT:
            segs[-1][2] = b
        else:
            segs.append([m, a, b, units.string()])
    return "".join("[Text]" + " ".join(al.words[a:b]) if m == TEXT else "[Speech]" + u for m, a, b, u in segs)


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_vectorised_build_equals_the_rule_read_literally(tok_dir, flavor):
    cfg = SpanConfig(2, 6, 1, 4)
    records = make_corpus(60, seed=3)
    w = records[5]["words"]
    w[2]["end"] = w[3]["start"] = w[2]["start"]  # a zero-length word (no overlap: that is rejected)
    builder = builder_for(tok_dir, SequenceConfig("interleaved", spans=cfg, variants=2, seed=11), flavor)
    res = builder.process([json.dumps(r).encode() for r in records], "m.jsonl", 1)
    assert not res.rejects
    tok = SpiritTokenizer(tok_dir, flavor)
    for variant in range(2):
        ends = np.cumsum(res.lengths[variant])
        got = np.split(res.ids[variant], ends[:-1])
        for d, ids in zip(records, got):
            want = tok.encode(reference(d, flavor, cfg, 11, variant), bos=True, eos=True)
            assert ids.tolist() == want, d["id"]
    assert not np.array_equal(res.ids[0], res.ids[1])  # variants draw different spans


@pytest.mark.parametrize("kind", ["speech", "asr", "tts"])
def test_paired_kinds_equal_string_form(tok_dir, kind):
    records = make_corpus(20, seed=4)
    builder = builder_for(tok_dir, SequenceConfig(kind), "expressive")
    res = builder.process([json.dumps(r).encode() for r in records], "m.jsonl", 1)
    tok = SpiritTokenizer(tok_dir, "expressive")
    got = np.split(res.ids[0], np.cumsum(res.lengths[0])[:-1])
    for d, ids in zip(records, got):
        speech = "[Speech]" + UnitsRecord.from_json(d).merged("expressive").string()
        text = "[Text]" + " ".join(parse_word_list(d["words"]).words)
        want = {"speech": speech, "asr": speech + text, "tts": text + speech}[kind]
        assert ids.tolist() == tok.encode(want, bos=True, eos=True)


words_st = st.lists(st.lists(st.text(st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")),
                                     min_size=1, max_size=8), max_size=6), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(rows=words_st)
def test_word_level_encoding_equals_whole_span_encoding(spirit_tokenizer_dir, rows):
    tok = SpiritTokenizer(str(spirit_tokenizer_dir))
    rows = [[w for w in r if w.split() == [w]] for r in rows]  # aligned words hold no white space
    lexicon = sorted({w for r in rows for w in r})
    index = {w: i for i, w in enumerate(lexicon)}
    ragged = Ragged.from_arrays([np.array([index[w] for w in r], dtype=np.int32) for r in rows], np.int32)
    word_level = WordTokens(tok.sp)
    assert word_level.word_level  # the test tokenizer splits on white space, like LLaMA-2's
    for enc in (word_level, WordTokens(tok.sp, word_level=False)):
        got = enc.encode(lexicon, ragged)
        for r, row in enumerate(rows):
            assert got.row(r).tolist() == (tok.sp.encode(" ".join(row)) if row else [])


def test_token_order_and_time_order_disagree(tok_dir):
    """Past 100 s, HuBERT's 24.99 Hz merge rate can order a pitch unit before a HuBERT unit that starts earlier:
    at a span switch between them the builder must still give each span its own units (the slow path)."""
    from megatron_spirit.speech.manifest import StreamUnits
    from megatron_spirit.tokenizer.vocab import HUBERT, PITCH, STYLE

    hubert = np.zeros(2600, dtype=int)
    hubert[2501], hubert[2502:] = 1, 2  # runs start at frames 0, 2501 (100.04 s) and 2502 (100.08 s)
    pitch = np.zeros(1300, dtype=int)
    pitch[1251:] = 5  # a run starting at pitch frame 1251: 100.08 s, merge key 100.08 < 2501 / 24.99
    words = [{"word": "a", "start": 0.0, "end": 100.0}, {"word": "b", "start": 100.04, "end": 100.08},
             {"word": "c", "start": 100.08, "end": 103.9}]
    rec = UnitsRecord("long", 104.0, {"hubert": StreamUnits.from_frames(hubert, 25.0, HUBERT),
                                      "pitch": StreamUnits.from_frames(pitch, 12.5, PITCH),
                                      "style": StreamUnits.from_frames(np.zeros(104, dtype=int), 1.0, STYLE)},
                      {"text": "a b c", "words": words})
    d = json.loads(rec.to_json())
    merged = rec.merged("expressive")
    hu_2501 = int(np.flatnonzero((merged.stream == 0) & (merged.unit == 1))[0])
    assert merged.stream[hu_2501 - 1] == 1 and merged.time[hu_2501 - 1] > merged.time[hu_2501]  # the disagreement
    cfg = SpanConfig(1, 1, 1, 1)
    tok = SpiritTokenizer(tok_dir, "expressive")
    for seed in range(4):
        builder = builder_for(tok_dir, SequenceConfig("interleaved", spans=cfg, seed=seed), "expressive")
        res = builder.process([json.dumps(d).encode()], "m.jsonl", 1)
        assert res.ids[0].tolist() == tok.encode(reference(d, "expressive", cfg, seed, 0), bos=True, eos=True)


@pytest.mark.parametrize("kind", ["speech", "interleaved", "asr", "tts"])
@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_chunk_without_a_usable_record(tok_dir, kind, flavor):
    builder = builder_for(tok_dir, SequenceConfig(kind), flavor)
    res = builder.process([b'{"id": "x"}', b"not json", b""], "f.jsonl", 1)
    assert [r.reason for r in res.rejects] == ["missing_units", "invalid_json"]
    assert len(res.ids[0]) == 0 and len(res.lengths[0]) == 0 and res.counts["documents"] == 0


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_records_whose_text_encodes_to_nothing_are_rejected(tok_dir, flavor):
    """A word the tokenizer turns into nothing (here: its cached ids emptied) empties some text segments: exactly
    the records with such a segment in some variant are rejected, and the others are built by the rule, without
    that word's ids."""
    from collections import Counter

    cfg = SpanConfig(1, 3, 1, 2)
    records = make_corpus(40, seed=6)
    silent = Counter(w for d in records for w in parse_word_list(d["words"]).words).most_common(3)[-1][0]
    builder = builder_for(tok_dir, SequenceConfig("interleaved", spans=cfg, variants=2, seed=3), flavor)
    builder.words._cache[silent] = []
    res = builder.process([json.dumps(r).encode() for r in records], "m.jsonl", 1)

    def segments(d, variant):
        parts = re.split(r"(\[Text\]|\[Speech\])", reference(d, flavor, cfg, 3, variant))[1:]
        return list(zip(parts[::2], parts[1::2]))

    bad = {d["id"] for d in records for v in range(2) for m, body in segments(d, v)
           if m == "[Text]" and set(body.split()) == {silent}}
    assert 0 < len(bad) < len(records) // 2
    assert any(m == "[Text]" and silent in body.split() and len(body.split()) > 1  # kept, with the word dropped
               for d in records if d["id"] not in bad for v in range(2) for m, body in segments(d, v))
    assert {r.id for r in res.rejects} == bad and {r.reason for r in res.rejects} == {"empty_text"}
    tok = SpiritTokenizer(tok_dir, flavor)
    kept = [d for d in records if d["id"] not in bad]
    for v in range(2):
        got = np.split(res.ids[v], np.cumsum(res.lengths[v])[:-1])
        assert len(got) == len(kept)
        for d, ids in zip(kept, got):
            want = "".join(m + (" ".join(w for w in body.split() if w != silent) if m == "[Text]" else body)
                           for m, body in segments(d, v))
            assert ids.tolist() == tok.encode(want, bos=True, eos=True), d["id"]
