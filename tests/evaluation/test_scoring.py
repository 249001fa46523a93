"""The scorer's fast paths against the naive one-forward-per-candidate loop, and the accuracy rule."""
import random

import pytest
import torch

from megatron_spirit.evaluation.hf import HFLogits
from megatron_spirit.evaluation.scoring import PackingConfig, Request, naive_scores, score_requests

from .conftest import tiny_llama

V = 300


def _requests(seed=0, n=12):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ctx = (1,) + tuple(rng.randrange(3, V) for _ in range(rng.randrange(0, 40 if i % 3 == 0 else 4)))
        cands = tuple(tuple(rng.randrange(3, V) for _ in range(rng.randrange(1, 9))) for _ in range(rng.choice([2, 2, 4])))
        out.append(Request(ctx, cands))
    return out


PATHS = {
    "one per row": PackingConfig(share_context=False, pack=False, batch_tokens=1),
    "batched": PackingConfig(share_context=False, pack=False, batch_tokens=400),
    "packed": PackingConfig(share_context=False, pack=True, row_tokens=64, batch_tokens=256),
    "shared context": PackingConfig(share_context=True, pack=False, batch_tokens=1),
    "shared + packed + batched": PackingConfig(share_context=True, pack=True, row_tokens=96, batch_tokens=400),
    "row smaller than a request": PackingConfig(share_context=True, pack=True, row_tokens=8, batch_tokens=64),
    "default (auto sharing, length batching)": PackingConfig(),
    "batches of equal-length rows only": PackingConfig(max_padding=0.0),
    "auto sharing at a low threshold, LM head in chunks of 3": PackingConfig(share_min_tokens=3, head_tokens=3),
}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_every_path_matches_naive_loop(attn):
    model = tiny_llama(V, attn=attn)
    reqs = _requests()
    want = naive_scores(reqs, model)
    for name, cfg in PATHS.items():
        got = score_requests(reqs, HFLogits(model), cfg)
        for r, (g, w) in enumerate(zip(got, want)):
            for j, (a, b) in enumerate(zip(g, w)):
                assert a.tokens == b.tokens
                assert abs(a.logprob - b.logprob) < 1e-5, (name, r, j, a.logprob, b.logprob)


class _Recorder:
    """A logits function without ``hidden``/``head`` (as the Megatron one) that records each batch's mask."""

    def __init__(self, fn):
        self.fn, self.masks = fn, []

    def __call__(self, ids, positions, allowed, rows, cols):
        self.masks.append(allowed)
        return self.fn(ids, positions, allowed, rows, cols)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_plain_causal_rows_go_in_without_a_mask(attn):
    """Short contexts are not shared by default: each candidate is a plain row, the batch has no mask at all,
    and the scores (one-token chunks of the LM head) are the naive loop's."""
    model = tiny_llama(V, attn=attn)
    rng = random.Random(1)
    reqs = [Request((1, 7), tuple(tuple(rng.randrange(3, V) for _ in range(rng.randrange(2, 12))) for _ in range(2)))
            for _ in range(9)]
    rec = _Recorder(HFLogits(model))
    got = score_requests(reqs, rec, PackingConfig(head_tokens=1, batch_tokens=64))
    assert len(rec.masks) > 1 and all(m is None for m in rec.masks)
    for g, w in zip(got, naive_scores(reqs, model)):
        for a, b in zip(g, w):
            assert a.tokens == b.tokens and abs(a.logprob - b.logprob) < 1e-5


def test_long_context_is_shared_by_default():
    """A long context with several candidates goes in once (one row per request, a branch mask)."""
    model = tiny_llama(V)
    reqs = [Request((1,) + tuple(range(10, 40)), ((50, 51, 52), (60,), (70, 71))) for _ in range(3)]
    rec = _Recorder(HFLogits(model))
    got = score_requests(reqs, rec, PackingConfig(batch_tokens=1))
    assert len(rec.masks) == 3 and all(m is not None and m.shape == (1, 37, 37) for m in rec.masks)
    for g, w in zip(got, naive_scores(reqs, model)):
        for a, b in zip(g, w):
            assert abs(a.logprob - b.logprob) < 1e-5


def test_modality_support_renormalises():
    model = tiny_llama(V)
    sup = tuple(range(100, V))
    reqs = [Request((1, 5, 6), ((120, 130), (150,)), support=(sup, None))]
    got = score_requests(reqs, HFLogits(model))[0]
    want = naive_scores(reqs, model)[0]
    assert abs(got[0].logprob - want[0].logprob) < 1e-5 and abs(got[1].logprob - want[1].logprob) < 1e-5
    full = score_requests([Request((1, 5, 6), ((120, 130),))], HFLogits(model))[0][0]
    assert got[0].logprob > full.logprob  # a smaller support gives each token more mass
    mixed = reqs + [Request((1, 9), ((110, 140, 200),), support=(sup,)), Request((1,), ((3, 4),))]
    for cfg in (PackingConfig(head_tokens=2), PackingConfig(share_context=True, pack=True, head_tokens=4)):
        for g, w in zip(score_requests(mixed, HFLogits(model), cfg), naive_scores(mixed, model)):
            for a, b in zip(g, w):
                assert abs(a.logprob - b.logprob) < 1e-5
    with pytest.raises(ValueError, match="outside the softmax support"):
        score_requests([Request((1, 5), ((7,),), support=(sup,))], HFLogits(model))


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="non-empty context"):
        Request((), ((3,),))
    with pytest.raises(ValueError, match="candidate 1 is empty"):
        Request((1,), ((3,), ()))
