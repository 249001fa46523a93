"""Items/s of the likelihood scorer beside the naive loop (one plain HF forward per candidate), and the FLOPs bound.

Two shapes, as the benchmarks are:

* ``swuggy``: ``<s>[Speech]`` then one of two short unit strings (10-30 tokens), many items;
* ``storycloze``: a long shared context (300-450 tokens: a spoken story's first four sentences) and two endings
  (15-40 tokens each), as the T→S / S→T versions are.

Paths (all give the naive loop's scores; checked to 1e-5 here, fp32):

* ``naive``: what a user would write: per candidate, one ``model(input_ids=context + candidate)`` (logits at
  every position, as transformers computes them), log-softmax at the candidate's positions, gather;
* ``fast``: the scorer's default :class:`PackingConfig` (context shared when that saves work, length-batched rows,
  no mask for plain rows, LM head at scored positions only, once per distinct position);
* ``shared-1``: shared context, one request per forward (no batching): the gain of sharing alone;
* ``packed``: shared context + several requests per ``--row-tokens`` row with a dense document mask (the
  previous default).

``flops`` is each path's matmul work as executed (linear layers at every token of a row, padding included;
attention L²/2 per causal row, L² per masked row; LM head at every computed position) and ``bound`` is
naive FLOPs / fast FLOPs: a speedup above it comes from running the same work faster (fewer, larger products, no
per-forward overhead), one below it from running it slower. On CPU a tiny model is compute bound, so the speedup
sits near the bound; on sWUGGY, where every token is scored and the context is two tokens, both paths need the
full-vocabulary LM head at (nearly) every token, so the bound is about 1.1.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py [--hidden 256 --layers 4 --vocab 32768 --swuggy 200 --storycloze 16]

Measured (README "Evaluation" has the default-shape table and a sweep over --hidden 64/512, --layers 2/8,
--vocab 2048): default shape, 1 thread, sWUGGY 1.8-1.9× (bound 1.05×), StoryCloze 4.2-4.7× (bound 4.1×).
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch


def _model(hidden: int, layers: int, vocab: int, dtype=torch.float32, device="cpu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), max_position_embeddings=4096,
                      attn_implementation="sdpa")
    with torch.device(device):
        return LlamaForCausalLM(cfg).to(dtype).eval()


def make_requests(shape: str, n: int, vocab: int, seed: int = 0):
    """Random items of the shape; ids are the SpiRit ones (units from 32002) with the full vocabulary, else
    units in the upper half of the small one and text in the lower."""
    from megatron_spirit.evaluation.scoring import Request

    rng = random.Random(seed)
    if vocab >= 32768:
        units, text, speech, text_mark = range(32002, 32503), range(3, 32000), 32001, 32000
    else:
        units, text, speech, text_mark = range(vocab // 2, vocab), range(4, vocab // 2), 2, 3
    out = []
    for _ in range(n):
        if shape == "swuggy":
            ctx = (1, speech)
            cands = tuple(tuple(rng.choice(units) for _ in range(rng.randint(10, 30))) for _ in range(2))
        else:
            ctx = (1, speech) + tuple(rng.choice(units) for _ in range(rng.randint(300, 450))) + (text_mark,)
            cands = tuple(tuple(rng.choice(text) for _ in range(rng.randint(15, 40))) for _ in range(2))
        out.append(Request(ctx, cands))
    return out


def _row_flops(length: int, heads_out: int, hidden: int, ffn: int, layers: int, vocab: int, masked: bool) -> float:
    linear = 2 * length * (4 * hidden * hidden + 3 * hidden * ffn)
    attention = 4 * hidden * (length * length if masked else length * (length + 1) / 2)
    return layers * (linear + attention) + 2 * heads_out * hidden * vocab


def path_flops(requests, cfg, hidden: int, ffn: int, layers: int, vocab: int) -> float:
    """Matmul FLOPs of the scorer's layout for ``cfg`` (its batches as built; ``None``: the naive loop)."""
    if cfg is None:
        return sum(_row_flops(len(r.context) + len(c), len(r.context) + len(c), hidden, ffn, layers, vocab, False)
                   for r in requests for c in r.candidates)
    from megatron_spirit.evaluation import scoring as s  # the layout's private steps: this is a benchmark

    total = 0.0
    for batch in s._batches(s._rows(s._units(requests, cfg), cfg), cfg.batch_tokens, cfg.max_padding):
        lay = s._layout(batch, requests)
        b, width = lay.ids.shape
        distinct = len(torch.unique(lay.rows * width + lay.cols))
        total += b * _row_flops(width, 0, hidden, ffn, layers, vocab, lay.allowed is not None)
        total += 2 * distinct * hidden * vocab
    return total


def race(fns: dict, repeat: int, device: str) -> dict:
    """Best time of each function over ``repeat`` rounds, run in turn within a round: the machine is shared, so
    alternating spreads any disturbance over all paths and the minimum is the least disturbed figure."""
    best = {k: float("inf") for k in fns}
    outs = {}
    for _ in range(repeat):
        for k, fn in fns.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs[k] = fn()  # scores are Python floats: the device work is done
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: (outs[k], best[k]) for k in fns}


def max_diff(a, b) -> float:
    return max(abs(x.logprob - y.logprob) for p, q in zip(a, b) for x, y in zip(p, q))


def measure(model, shapes: dict, repeat: int, device: str, row_tokens: int = 512, naive_items: dict | None = None,
            tolerance: float = 1e-5) -> dict:
    """Per shape: items/s, speedup over naive and FLOPs of each path; scores checked against naive."""
    from megatron_spirit.evaluation.hf import HFLogits
    from megatron_spirit.evaluation.scoring import PackingConfig, naive_scores, score_requests

    fn = HFLogits(model)
    c = model.config
    dims = (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size)
    paths = {"fast": PackingConfig(), "shared-1": PackingConfig(share_context=True, batch_tokens=1),
             "packed": PackingConfig(share_context=True, pack=True, row_tokens=row_tokens)}
    report = {}
    for shape, reqs in shapes.items():
        naive_reqs = reqs[:(naive_items or {}).get(shape, len(reqs))]  # naive may time a prefix (GPU: slow)
        score_requests(reqs[:2], fn, device=device)  # warm-up
        naive_scores(reqs[:2], model, device)
        fns = {"naive": lambda: naive_scores(naive_reqs, model, device)}
        fns.update({k: (lambda cfg=cfg: score_requests(reqs, fn, cfg, device)) for k, cfg in paths.items()})
        got = race(fns, repeat, device)
        naive, t_naive = got["naive"]
        f_naive = path_flops(naive_reqs, None, *dims) / len(naive_reqs)
        rate_naive = len(naive_reqs) / t_naive
        row = {"items": len(reqs), "naive_items": len(naive_reqs), "naive_items_per_s": rate_naive,
               "naive_gflop_per_item": f_naive / 1e9}
        for k, cfg in paths.items():
            scores, t = got[k]
            err = max_diff(naive, scores[:len(naive_reqs)])
            assert err < tolerance, f"{shape}/{k}: scores differ from the naive loop by {err}"
            f = path_flops(reqs, cfg, *dims) / len(reqs)
            row[k] = {"items_per_s": len(reqs) / t, "speedup": len(reqs) / t / rate_naive,
                      "flop_ratio": f_naive / f, "gflop_per_item": f / 1e9, "max_abs_diff": err}
        report[shape] = row
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--swuggy", type=int, default=200, help="sWUGGY-shaped items")
    ap.add_argument("--storycloze", type=int, default=16, help="StoryCloze-shaped items")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (each path's best is reported)")
    ap.add_argument("--row-tokens", type=int, default=512, help="row length of the packed path")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = _model(args.hidden, args.layers, args.vocab, device=args.device)
    shapes = {"swuggy": make_requests("swuggy", args.swuggy, args.vocab),
              "storycloze": make_requests("storycloze", args.storycloze, args.vocab)}
    report = {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "device": args.device,
              "threads": torch.get_num_threads(),
              **measure(model, shapes, args.repeat, args.device, args.row_tokens)}
    for shape in shapes:
        r = report[shape]
        parts = [f"naive {r['naive_items_per_s']:7.2f}"]
        parts += [f"{k} {r[k]['items_per_s']:7.2f} ({r[k]['speedup']:4.1f}x, bound {r[k]['flop_ratio']:4.1f}x)"
                  for k in ("fast", "shared-1", "packed")]
        err = max(r[k]["max_abs_diff"] for k in ("fast", "shared-1", "packed"))
        print(f"h{args.hidden} L{args.layers} V{args.vocab} {shape:10s} items/s: " + " | ".join(parts)
              + f" | max |Δ| {err:.1e}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
