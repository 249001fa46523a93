"""Prompt form (markers, <s>, options) and the accuracy of a constructed model that knows the answers."""
import pytest
import torch

from megatron_spirit.evaluation.aggregate import accuracy
from megatron_spirit.evaluation.prompts import Item, PromptBuilder, PromptConfig, Segment
from megatron_spirit.evaluation.tasks import score_items
from megatron_spirit.speech.manifest import StreamUnits, UnitsRecord
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
from megatron_spirit.tokenizer.vocab import HUBERT


@pytest.fixture(scope="module")
def tok(spirit_tokenizer_dir):
    return SpiritTokenizer(spirit_tokenizer_dir)


def _units(**utts):
    return {k: UnitsRecord(k, 1.0, {"hubert": StreamUnits.from_frames(v, 25.0, HUBERT)}) for k, v in utts.items()}


def test_release_prompt_form(tok):
    v = tok.vocab
    units = _units(ctx=[5, 5, 7], end1=[3, 3, 3, 9], end2=[4])
    b = PromptBuilder(tok, PromptConfig(flavor="base"), units)
    hu = v.stream_offset(HUBERT)
    # [Text]context[Speech]ending: the switch marker is shared context, units deduplicated.
    r = b.request(Item("x", (Segment("text", "the cat"),), ((Segment("speech", "end1"),), (Segment("speech", "end2"),))))
    assert r.context == (tok.bos_id, v.text_id, *tok.encode_text("the cat"), v.speech_id)
    assert r.candidates == ((hu + 3, hu + 9), (hu + 4,))
    # [Speech]context[Text]ending.
    r = b.request(Item("y", (Segment("speech", "ctx"),), ((Segment("text", "a dog"),), (Segment("text", "a"),))))
    assert r.context == (tok.bos_id, v.speech_id, hu + 5, hu + 7, v.text_id)
    assert r.candidates[0] == tuple(tok.encode_text("a dog"))
    # Candidates alone (sWUGGY): <s>[Speech] is the context.
    r = b.request(Item("z", (), ((Segment("speech", "end1"),), (Segment("speech", "end2"),))))
    assert r.context == (tok.bos_id, v.speech_id)
    # Options: the marker scored with each candidate; no <s>.
    r = PromptBuilder(tok, PromptConfig(bos=False, switch_marker="hypothesis", flavor="base"), units).request(
        Item("w", (Segment("text", "the cat"),), ((Segment("speech", "end2"),),)))
    assert r.context[0] == v.text_id and r.candidates == ((v.speech_id, hu + 4),)
    with pytest.raises(ValueError, match="no units for utterance 'nope'"):
        b.request(Item("q", (), ((Segment("speech", "nope"),),)))


class Knows:
    """A constructed model: next-token logits that favour the ids of the right answers."""

    def __init__(self, good_ids, rows):
        self.bias = torch.zeros(rows)
        self.bias[list(good_ids)] = 6.0

    def __call__(self, ids, positions, allowed, rows, cols):
        return self.bias.expand(len(rows), -1).clone()


def test_constructed_model_scores_one_zero_half(tok):
    words = [("cat", "zzq"), ("dog", "vvk"), ("sun", "jjw")]
    items = [Item(str(i), (), ((Segment("text", w),), (Segment("text", n),))) for i, (w, n) in enumerate(words)]
    b = PromptBuilder(tok)
    good = {t for w, _ in words for t in tok.encode_text(w)}
    assert not good & {t for _, n in words for t in tok.encode_text(n)}
    model = Knows(good, tok.vocab.export_size)
    for metric in ("normalised", "summed"):
        assert accuracy(items, score_items(items, b, model), metric)["accuracy"] == 1.0
        swapped = [Item(it.id, it.context, it.candidates, 1) for it in items]
        assert accuracy(swapped, score_items(swapped, b, model), metric)["accuracy"] == 0.0
        same = [Item(it.id, it.context, (it.candidates[0], it.candidates[0])) for it in items]
        assert accuracy(same, score_items(same, b, model), metric)["accuracy"] == 0.5
