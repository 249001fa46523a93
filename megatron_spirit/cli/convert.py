"""spirit-convert: Hugging Face LLaMA(-2) ⇄ megatron-core distributed checkpoint (any TP/PP)."""
from __future__ import annotations

import argparse
import re
import sys


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MB)")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2) or "_"))


def parser() -> argparse.ArgumentParser:
    from ..model.config import DTYPES, RECIPE_ROPE_BASE

    p = argparse.ArgumentParser(
        prog="spirit-convert",
        description="Convert checkpoints between Hugging Face LlamaForCausalLM folders and megatron-core "
        "distributed checkpoints, tensor by tensor (memory: about one layer, never the whole model). Outputs are "
        "written atomically; every input is checked before anything is written.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    h = sub.add_parser(
        "hf-to-megatron",
        help="HF LLaMA folder → megatron-core checkpoint with the SpiRit vocabulary",
        description="Read a local HF LLaMA checkpoint (safetensors or .bin, sharded or not), extend the embedding "
        "and output layer to the SpiRit tokenizer (new rows ~ N(0, init_method_std²) with --seed; a checkpoint "
        "that is already SpiRit keeps every row, and its rope_theta), pad to "
        "Megatron's size (make_vocab_size_divisible_by × TP), record the target RoPE base, and write a "
        "megatron-core torch_dist checkpoint that loads (resharding) at any TP/PP. The folder also holds "
        "spirit_checkpoint.json (the model config) and tokenizer/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    h.add_argument("--hf", required=True, help="Hugging Face model folder (config.json + weights)")
    h.add_argument("--tokenizer", required=True, help="SpiRit tokenizer folder (spirit-make-tokenizer) built from "
                   "this model's tokenizer.model; for a SpiRit checkpoint (a released SpiRit-LM or an export) the "
                   "checkpoint folder itself, or spirit-make-tokenizer --base-model <it>")
    h.add_argument("--out", required=True, help="output checkpoint folder (replaced if it exists)")
    h.add_argument("--tp", type=int, default=1, help="tensor-parallel size the vocabulary is padded for "
                   "(checked against the heads; other sizes still load)")
    h.add_argument("--pp", type=int, default=1, help="pipeline-parallel size to check the layers against")
    h.add_argument("--config", help="named model config the checkpoint must match (e.g. spirit-7b); default: "
                   "sizes from the HF config.json")
    h.add_argument("--rope-base", type=float, help="RoPE base of the target (default: the named config's, "
                   f"else the SpiRit recipe's {RECIPE_ROPE_BASE:g})")
    h.add_argument("--dtype", choices=tuple(DTYPES), help="stored dtype (default: the checkpoint's)")
    h.add_argument("--seed", type=int, default=1234, help="seed of the new embedding/output rows")
    h.add_argument("--no-progress", action="store_true", help="no progress bar")

    m = sub.add_parser(
        "megatron-to-hf",
        help="megatron-core checkpoint (any TP/PP) → HF LlamaForCausalLM folder",
        description="Export a megatron-core distributed checkpoint (converted or trained, any TP/PP; a training "
        "folder means its newest complete iter_*) to a Hugging Face folder that stock transformers loads: "
        "safetensors shards, config.json (exported vocab size, rope_theta), generation_config.json, tokenizer, "
        "checksums.json. The checkpoint's checksums are verified as it is read; a training folder whose newest "
        "checkpoint is corrupt exports the newest intact one, with a warning.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    m.add_argument("--ckpt", required=True, help="checkpoint folder, or a training folder with iter_* checkpoints")
    m.add_argument("--out", required=True, help="output HF folder (replaced if it exists)")
    m.add_argument("--tokenizer", help="SpiRit tokenizer folder (default: the checkpoint's tokenizer/)")
    m.add_argument("--config", help="named model config (default: the checkpoint's spirit_checkpoint.json)")
    m.add_argument("--dtype", choices=tuple(DTYPES), help="exported dtype (default: the checkpoint's)")
    m.add_argument("--max-shard-size", type=_size, default="5GB", help="largest safetensors shard")
    m.add_argument("--no-fallback", action="store_true", help="with a training folder: stop when its newest "
                   "checkpoint is corrupt instead of exporting the newest intact one")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..parallel import cpu

    with cpu.compat():  # this entry's one switch for megatron-core without CUDA (undone on return)
        return _run(args)


def _run(args) -> int:
    from ..checkpoint.checksums import CorruptCheckpoint
    from ..model.config import get_model_config

    try:
        model_cfg = get_model_config(args.config) if args.config else None
        if args.command == "hf-to-megatron":
            from ..convert.hf_to_megatron import hf_to_megatron

            out = hf_to_megatron(args.hf, args.tokenizer, args.out, tp=args.tp, pp=args.pp, model_cfg=model_cfg,
                                 rope_base=args.rope_base, dtype=args.dtype, seed=args.seed,
                                 progress=not args.no_progress)
        else:
            from ..convert.megatron_to_hf import megatron_to_hf

            out = megatron_to_hf(args.ckpt, args.out, tokenizer_dir=args.tokenizer, model_cfg=model_cfg,
                                 dtype=args.dtype, max_shard_bytes=args.max_shard_size,
                                 progress=not args.no_progress, fallback=not args.no_fallback,
                                 warn=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, FileNotFoundError, KeyError, CorruptCheckpoint) as e:
        print(f"spirit-convert {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
