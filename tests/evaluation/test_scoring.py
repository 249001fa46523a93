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


def test_modality_support_renormalises():
    model = tiny_llama(V)
    sup = tuple(range(100, V))
    reqs = [Request((1, 5, 6), ((120, 130), (150,)), support=(sup, None))]
    got = score_requests(reqs, HFLogits(model))[0]
    want = naive_scores(reqs, model)[0]
    assert abs(got[0].logprob - want[0].logprob) < 1e-5 and abs(got[1].logprob - want[1].logprob) < 1e-5
    full = score_requests([Request((1, 5, 6), ((120, 130),))], HFLogits(model))[0][0]
    assert got[0].logprob > full.logprob  # a smaller support gives each token more mass
    with pytest.raises(ValueError, match="outside the softmax support"):
        score_requests([Request((1, 5), ((7,),), support=(sup,))], HFLogits(model))


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="non-empty context"):
        Request((), ((3,),))
    with pytest.raises(ValueError, match="candidate 1 is empty"):
        Request((1,), ((3,), ()))
