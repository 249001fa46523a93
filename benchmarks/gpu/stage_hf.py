"""Stage hf: the Hugging Face transformers baseline on the same slice and batch as the train stage.

``LlamaForCausalLM`` with ``attn_implementation="sdpa"``, the slice's widths and layers, vocabulary = the
Megatron run's padded embedding rows (so both do the same FLOPs), the same micro-batch, sequence and number of
micro-batches per step (gradient accumulation), gradient clipping at 1.0 and ``torch.optim.AdamW`` (fused on
CUDA). Two precisions: ``autocast`` (fp32 weights and AdamW, bf16 autocast: what HF's Trainer does with
``bf16=True``, the same numerics as Megatron's fp32 master weights) and ``bf16`` (bf16 weights and AdamW states,
faster and less exact). Random token batches; the step time is the median of the timed steps, synchronised.

    python benchmarks/gpu/stage_hf.py --result hf.json --env env.json [--dry-run] [--layers 8]
"""
from __future__ import annotations

import gc
import statistics
import time

from common import gpu_facts, stage_main
from workload import make_workload


def measure(w, variant: str, device: str, peak: float) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    m = w.model
    cfg = LlamaConfig(
        vocab_size=w.padded_vocab, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.query_groups, max_position_embeddings=m.seq_length, rope_theta=m.rope_base,
        rms_norm_eps=m.norm_eps, tie_word_embeddings=False, use_cache=False, attn_implementation="sdpa",
    )
    cuda = device == "cuda"
    autocast = variant == "autocast" and w.precision == "bf16"
    dtype = torch.bfloat16 if variant == "bf16" and w.precision == "bf16" else torch.float32
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.train()
    attention = getattr(model.config, "_attn_implementation", None)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=cuda)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [torch.randint(0, w.vocab_size, (w.micro_batch, m.seq_length), device=device, generator=gen)
               for _ in range(w.num_micro)]

    def step() -> float:
        total = 0.0
        for x in batches:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=x, labels=x).loss / w.num_micro
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(total)

    times, losses = [], []
    for _ in range(w.warmup_steps + w.timed_steps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses.append(step())  # float() waits for the step
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times[w.warmup_steps:])
    tps = w.tokens_per_step / seconds
    tflops = tps * w.flops_per_token / 1e12
    out = {"variant": variant, "param_dtype": str(dtype).replace("torch.", ""), "autocast_bf16": autocast,
           "attn_implementation": attention,
           "step_seconds": seconds, "step_seconds_all": times, "tokens_per_s": tps, "tflops": tflops,
           "mfu": tflops / peak, "losses": losses,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    del model, opt, batches
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def run(args) -> dict:
    import torch
    import transformers

    memory, peak = gpu_facts(args)
    w = make_workload(args.dry_run, memory, peak, args.layers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    variants = {}
    for variant in ("autocast", "bf16"):
        try:
            variants[variant] = measure(w, variant, device, peak)
        except Exception as e:  # noqa: BLE001 - one variant failing (e.g. out of memory) keeps the other
            variants[variant] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        print(variant, {k: v for k, v in variants[variant].items() if k not in ("losses", "step_seconds_all")})
    ok = [v for v in variants.values() if "tokens_per_s" in v]
    if not ok:
        raise RuntimeError(f"both HF variants failed: {variants}")
    best = max(ok, key=lambda v: v["tokens_per_s"])
    return {"workload": w.describe(), "transformers": transformers.__version__, "device": device,
            "peak_tflops": peak, "variants": variants, "best_variant": best["variant"],
            "tokens_per_s": best["tokens_per_s"]}


if __name__ == "__main__":
    stage_main(run, __doc__)
