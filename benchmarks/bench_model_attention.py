#!/usr/bin/env python
"""Why the local spec's core attention is torch SDPA: megatron-core's own ``DotProductAttention`` against this
project's ``SDPAttention`` (same module, score/softmax/context through ``scaled_dot_product_attention``).

For each sequence length: forward+backward wall time (median of ``--repeats``) and the bytes autograd keeps
for backward (measured with ``torch.autograd.graph.saved_tensors_hooks``, unique storages), causal mask, one
process (TP1), fp32 on CPU or bf16 on a GPU. The outputs are also compared (max |difference|).

    python benchmarks/bench_model_attention.py --seq 512 1024 2048 --out bench_out/model_attention.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def saved_bytes(fn) -> tuple[torch.Tensor, int]:
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--groups", type=int, default=8, help="key/value heads (GQA when fewer than --heads)")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)

    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_spirit.model.config import ModelConfig, ParallelConfig, transformer_config
    from megatron_spirit.model.specs import SDPAttention
    from megatron_spirit.parallel import cpu
    from megatron_spirit.parallel.runtime import init_distributed, init_model_parallel, teardown

    cpu.enable()  # this process's switch for megatron-core without CUDA (a no-op on a GPU)
    init_distributed()
    init_model_parallel(ParallelConfig(), seed=1)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    device = torch.device("cuda") if cuda else torch.device("cpu")
    h = args.heads * args.head_dim
    rows = []
    for s in args.seq:
        model = ModelConfig(1, h, 4 * h, args.heads, args.groups, seq_length=s, name="bench")
        cfg = transformer_config(model, ParallelConfig(), dtype="bf16" if cuda else "fp32")
        g = torch.Generator(device="cpu").manual_seed(s)
        shape_q, shape_kv = (s, args.batch, args.heads, args.head_dim), (s, args.batch, args.groups, args.head_dim)
        q0 = torch.randn(*shape_q, generator=g).to(device, dtype)
        k0 = torch.randn(*shape_kv, generator=g).to(device, dtype)
        v0 = torch.randn(*shape_kv, generator=g).to(device, dtype)
        row = {"seq": s, "batch": args.batch, "heads": args.heads, "groups": args.groups, "head_dim": args.head_dim,
               "device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(dtype)}
        outs = {}
        for name, cls in (("megatron_unfused", DotProductAttention), ("sdpa", SDPAttention)):
            core = cls(cfg, 1, AttnMaskType.causal, "self").to(device)
            times, kept = [], 0
            for _ in range(args.repeats):
                q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out, kept = saved_bytes(lambda: core(q, k, v, None))
                out.float().square().mean().backward()
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            outs[name] = out.detach().float()
            row[f"{name}_ms"] = 1000 * statistics.median(times)
            row[f"{name}_saved_MiB"] = kept / 2**20
        row["max_abs_diff"] = float((outs["sdpa"] - outs["megatron_unfused"]).abs().max())
        row["speedup"] = row["megatron_unfused_ms"] / row["sdpa_ms"]
        row["memory_ratio"] = row["megatron_unfused_saved_MiB"] / max(row["sdpa_saved_MiB"], 1e-9)
        rows.append(row)
        print(
            f"s={s:5d}: unfused {row['megatron_unfused_ms']:8.1f} ms {row['megatron_unfused_saved_MiB']:8.1f} MiB | "
            f"sdpa {row['sdpa_ms']:8.1f} ms {row['sdpa_saved_MiB']:8.1f} MiB | ×{row['speedup']:.1f} faster, "
            f"×{row['memory_ratio']:.1f} less kept; max|Δ| {row['max_abs_diff']:.1e}",
            flush=True,
        )
    if args.out:
        from megatron_spirit.utils.atomic import write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(rows, indent=1))
    teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
