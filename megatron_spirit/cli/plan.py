"""spirit-plan: which parallel layouts fit a cluster, with memory per GPU and step time; recommends one."""
from __future__ import annotations

import argparse
import sys

from ..model.config import NAMED_CONFIGS
from ..tokenizer.vocab import SpiritVocab


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spirit-plan",
        description=(
            "Estimate GPU memory and step time of every TP/PP/micro-batch/activation-recompute layout of a model "
            "on a cluster (distributed optimizer, bf16, sequence parallel with TP>1, flash/SDPA attention) and "
            "recommend the fastest that fits. The defaults are the SpiRit-LM recipe: 7B, 64 A100-80GB, "
            "256 sequences × 4096 tokens. The memory and time model is printed with --explain."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="spirit-7b", choices=sorted(NAMED_CONFIGS), help="named model config")
    p.add_argument("--seq-length", type=int, default=4096, help="tokens per sequence")
    p.add_argument("--global-batch", type=int, default=256, help="sequences per optimizer step")
    p.add_argument("--gpus", type=int, default=64, help="GPUs in the job")
    p.add_argument("--gpu-memory", type=float, default=80.0, help="GiB of memory per GPU")
    p.add_argument("--gpu-tflops", type=float, default=312.0, help="dense bf16 peak TFLOP/s per GPU (A100: 312)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="tensor parallelism stays inside a node")
    p.add_argument("--efficiency", type=float, default=0.5, help="fraction of peak achieved by the matmuls")
    p.add_argument("--usable", type=float, default=0.9, help="fraction of GPU memory a plan may use")
    p.add_argument("--overhead", type=float, default=4.0, help="GiB per GPU for CUDA context, NCCL, fragmentation")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument(
        "--vocab-size", type=int, default=None,
        help="tokenizer size (default: LLaMA-2's 32000 + the EXPRESSIVE SpiRit pieces and fillers = 32768; padded the "
        "Megatron way)",
    )
    vocab.add_argument("--tokenizer", default=None, help="a spirit tokenizer folder to take the vocabulary size from")
    p.add_argument("--steps", type=int, default=200_000, help="training steps, for the GPU-hours estimate")
    p.add_argument("--top", type=int, default=15, help="how many fitting layouts to list")
    p.add_argument("--all", action="store_true", help="also list layouts that do not fit")
    p.add_argument("--explain", action="store_true", help="print the memory and time model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..model import plan as planner
    from ..model.config import get_model_config

    try:
        model = get_model_config(args.model, seq_length=args.seq_length)
        if args.tokenizer:
            from ..tokenizer.tokenizer import SpiritTokenizer

            vocab_size = SpiritTokenizer(args.tokenizer).vocab.full_size
        else:
            vocab_size = args.vocab_size or SpiritVocab(32000).full_size
        cluster = planner.Cluster(
            gpus=args.gpus, memory_gib=args.gpu_memory, peak_tflops=args.gpu_tflops,
            gpus_per_node=args.gpus_per_node, efficiency=args.efficiency, usable=args.usable,
            overhead_gib=args.overhead,
        )
        rows = planner.plans(model, args.seq_length, args.global_batch, cluster, vocab_size, include_unfit=args.all)
    except (ValueError, FileNotFoundError) as e:
        print(f"spirit-plan: error: {e}", file=sys.stderr)
        return 2
    if args.explain:
        print(planner.__doc__)
    print(
        f"{model.name}: {model.num_parameters(vocab_size) / 1e9:.2f}B parameters (vocab {vocab_size}), "
        f"sequence {args.seq_length}, global batch {args.global_batch}, {args.gpus} GPUs × {args.gpu_memory:g} GiB"
    )
    fitting = [r for r in rows if r.fits]
    shown = rows if args.all else fitting
    for r in shown[: args.top if not args.all else None]:
        print(("  " if r.fits else "✗ ") + r.row())
    if not fitting:
        print("spirit-plan: no layout fits; add GPUs, lower the micro-batch or sequence length", file=sys.stderr)
        return 2
    print(planner.summary(fitting[0], model, cluster, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
