"""Span sampling follows SPEC §3 and every unit lands in exactly one span (the rule in interleave.py)."""
import random

import numpy as np
import pytest

from megatron_spirit.data.alignments import parse_word_list
from megatron_spirit.data.interleave import SPEECH, TEXT, SpanConfig, interleave, record_rng, sample_spans
from megatron_spirit.speech.manifest import UnitsRecord
from megatron_spirit.tokenizer.vocab import SpiritVocab

from .corpus import make_utterance


@pytest.mark.parametrize("cfg", [SpanConfig(), SpanConfig(2, 3, 1, 2)])
def test_span_lengths_alternation_and_first_modality(cfg):
    firsts, lengths = [], {TEXT: set(), SPEECH: set()}
    for seed in range(300):
        n = 1 + seed % 97
        spans = sample_spans(n, np.random.default_rng(seed), cfg)
        assert spans[0][1] == 0 and spans[-1][2] == n
        assert all(a[2] == b[1] for a, b in zip(spans, spans[1:]))  # contiguous
        assert all(a[0] != b[0] for a, b in zip(spans, spans[1:]))  # alternating
        firsts.append(spans[0][0])
        for m, a, b in spans[:-1]:  # the last span may be cut by the utterance's end
            lengths[m].add(b - a)
    assert 0.35 < np.mean(firsts) < 0.65  # the first modality is a coin flip
    assert lengths[TEXT] == set(range(cfg.text_min, cfg.text_max + 1))
    assert lengths[SPEECH] == set(range(cfg.speech_min, cfg.speech_max + 1))


def test_bad_span_config():
    with pytest.raises(ValueError, match="text span"):
        SpanConfig(5, 4)


def test_record_rng_independent_of_order():
    a = record_rng(1, 0, "utt7").integers(1 << 30)
    assert a == record_rng(1, 0, "utt7").integers(1 << 30)
    assert a != record_rng(1, 1, "utt7").integers(1 << 30) and a != record_rng(2, 0, "utt7").integers(1 << 30)


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_units_partitioned_across_spans(flavor):
    vocab = SpiritVocab(600, flavor)
    rng = random.Random(5)
    for k in range(40):
        d = make_utterance(f"u{k}", rng)
        rec = UnitsRecord.from_json(d)
        al = parse_word_list(d["words"])
        merged = rec.merged(flavor)
        ids = merged.ids(vocab)
        plan = interleave(al.words, al.starts, merged, ids, record_rng(0, 0, rec.id), SpanConfig(2, 6, 1, 4))
        # Every speech span holds exactly the units timed in [start of its first word, start of the next span)
        # (the first span from -inf, the last to +inf); text spans' units are the complement.
        edges = np.concatenate([[-np.inf], al.starts[1:], [np.inf]])
        owned = []
        for (m, a, b), unit_ids in zip(plan.spans, plan.unit_ids):
            expect = merged.slice_time(edges[a], edges[b]).ids(vocab)
            owned.append(expect)
            if m == SPEECH:
                assert unit_ids.tolist() == expect.tolist()
                assert len(unit_ids) > 0
            else:
                assert len(unit_ids) == 0
        assert sorted(np.concatenate(owned).tolist()) == sorted(ids.tolist())  # nothing lost, nothing twice
        assert " ".join(t for t in plan.texts if t) == " ".join(
            w for (m, a, b) in plan.spans if m == TEXT for w in al.words[a:b])
