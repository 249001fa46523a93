"""Stage eval: items/s of the likelihood scorer (``spirit-eval score``) beside the naive loop, 7B-shaped.

transformers ``LlamaForCausalLM`` (sdpa) with the slice's widths and layers (``workload.py``: LLaMA-2 7B widths,
8 of 32 layers, the SpiRit vocabulary's 32,768 rows), random weights in bf16 on the GPU; the two item shapes of
``benchmarks/bench_eval.py`` (sWUGGY: ``<s>[Speech]`` + two 10-30-token unit strings; StoryCloze: a 300-450-token
shared context + two 15-40-token endings), each through the naive loop (one forward per candidate) and the
scorer's paths (default, shared context one request per forward, packed rows), with the FLOP ratio of each. In
bf16 the paths' scores differ from the naive loop's by rounding (batch shapes change the kernels), so the
difference is recorded, not asserted; the dry run (tiny model, fp32, CPU) asserts 1e-4.

    python benchmarks/gpu/stage_eval.py --result eval.json [--dry-run] [--layers 8]
"""
from __future__ import annotations

import sys

from common import ROOT, stage_main
from workload import make_workload

sys.path.insert(0, str(ROOT / "benchmarks"))

ITEMS = {"swuggy": 256, "storycloze": 32}
DRY_ITEMS = {"swuggy": 12, "storycloze": 3}


def run(args) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench_eval import make_requests, measure

    w = make_workload(args.dry_run, layers=args.layers)
    m = w.model
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if w.precision == "bf16" else torch.float32
    cfg = LlamaConfig(
        vocab_size=w.padded_vocab, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.query_groups, max_position_embeddings=m.seq_length, rope_theta=m.rope_base,
        rms_norm_eps=m.norm_eps, tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    items = DRY_ITEMS if args.dry_run else ITEMS
    vocab = 32768 if w.padded_vocab >= 32768 else w.padded_vocab
    shapes = {k: make_requests(k, n, vocab) for k, n in items.items()}
    report = measure(model, shapes, 1 if args.dry_run else 2, device,
                     tolerance=1e-4 if dtype == torch.float32 else float("inf"))
    for shape, r in report.items():
        print(shape, f"naive {r['naive_items_per_s']:.1f} items/s", *(
            f"{k} {r[k]['items_per_s']:.1f} ({r[k]['speedup']:.1f}x, FLOP ratio {r[k]['flop_ratio']:.1f})"
            for k in ("fast", "shared-1", "packed")))
    return {"device": device, "dtype": str(dtype).replace("torch.", ""), "layers": m.num_layers,
            "hidden": m.hidden_size, "vocab_rows": w.padded_vocab,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "shapes": report}


if __name__ == "__main__":
    stage_main(run, __doc__)
