"""Items/s of the likelihood scorer beside the naive loop (one plain HF forward per candidate), on CPU.

Two shapes, as the benchmarks are:

* ``swuggy``: ``<s>[Speech]`` then one of two short unit strings (10-30 tokens), many items;
* ``storycloze``: a long shared context (300-450 tokens: a spoken story's first four sentences) and two endings
  (15-40 tokens each), as the T→S / S→T versions are.

The fast path is the default :class:`PackingConfig` (shared context, packing into ``--row-tokens`` rows, length
batching, LM head only at scored positions); ``shared only`` turns packing off to show where the gain comes
from. On CPU, packing buys little (a forward has little fixed cost there, and the dense document mask makes
attention quadratic in the row length); its gain is the per-forward latency of small batches on a GPU. Scores of both paths are checked to agree (1e-4, fp32). The model is a random LLaMA of the given size with
the SpiRit EXPRESSIVE vocabulary (32768 rows); on a small model the LM head is a large share of the naive loop's
work, so ``--hidden``/``--layers`` are printed with the figures.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py [--hidden 256 --layers 4 --swuggy 200 --storycloze 16]
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch


def _model(hidden: int, layers: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), max_position_embeddings=4096,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).float().eval()


def _requests(shape: str, n: int, vocab: int, seed: int = 0):
    from megatron_spirit.evaluation.scoring import Request

    rng = random.Random(seed)
    units = range(32002, 32503)
    out = []
    for _ in range(n):
        if shape == "swuggy":
            ctx = (1, 32001)
            cands = tuple(tuple(rng.choice(units) for _ in range(rng.randint(10, 30))) for _ in range(2))
        else:
            ctx = (1, 32001) + tuple(rng.choice(units) for _ in range(rng.randint(300, 450))) + (32000,)
            cands = tuple(tuple(rng.randrange(3, 32000) for _ in range(rng.randint(15, 40))) for _ in range(2))
        out.append(Request(ctx, cands))
    return out


def _race(fns: dict, repeat: int, device: str) -> dict:
    """Best time of each function over ``repeat`` rounds, run in turn within a round: the machine is shared, so
    alternating spreads any disturbance over all paths and the minimum is the least disturbed figure."""
    best = {k: float("inf") for k in fns}
    outs = {}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: (outs[k], best[k]) for k in fns}


def main() -> None:
    from megatron_spirit.evaluation.hf import HFLogits
    from megatron_spirit.evaluation.scoring import PackingConfig, naive_scores, score_requests

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--swuggy", type=int, default=200, help="sWUGGY-shaped items")
    ap.add_argument("--storycloze", type=int, default=16, help="StoryCloze-shaped items")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (each path's best is reported)")
    ap.add_argument("--row-tokens", type=int, default=512, help="packed row length of the fast path")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = args.device
    model = _model(args.hidden, args.layers, args.vocab).to(dev)
    fn = HFLogits(model)
    report = {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "device": dev,
              "row_tokens": args.row_tokens,
              "threads": torch.get_num_threads()}
    for shape, n in (("swuggy", args.swuggy), ("storycloze", args.storycloze)):
        reqs = _requests(shape, n, args.vocab)
        score_requests(reqs[:2], fn, device=dev)  # warm-up
        naive_scores(reqs[:2], model, dev)
        got = _race({"naive": lambda: naive_scores(reqs, model, dev),
                     "fast": lambda: score_requests(reqs, fn, PackingConfig(row_tokens=args.row_tokens), dev),
                     "shared": lambda: score_requests(reqs, fn, PackingConfig(pack=False, batch_tokens=1), dev)},
                    args.repeat, dev)
        (naive, t_naive), (fast, t_fast), (shared, t_shared) = got["naive"], got["fast"], got["shared"]
        err = max(abs(a.logprob - b.logprob) for x, y in zip(naive, fast) for a, b in zip(x, y))
        err = max(err, max(abs(a.logprob - b.logprob) for x, y in zip(naive, shared) for a, b in zip(x, y)))
        assert err < 1e-4, f"{shape}: fast scores differ from the naive loop by {err}"
        report[shape] = {"items": n, "naive_items_per_s": round(n / t_naive, 2),
                         "fast_items_per_s": round(n / t_fast, 2), "speedup": round(t_naive / t_fast, 2),
                         "shared_only_items_per_s": round(n / t_shared, 2),
                         "shared_only_speedup": round(t_naive / t_shared, 2), "max_abs_diff": err}
        print(f"{shape:10s}: naive {n / t_naive:8.2f} items/s | fast {n / t_fast:8.2f} items/s "
              f"({t_naive / t_fast:5.1f}x) | shared context only {n / t_shared:8.2f} items/s "
              f"({t_naive / t_shared:4.1f}x) | max |Δ| {err:.1e}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
