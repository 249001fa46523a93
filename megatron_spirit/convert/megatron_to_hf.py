"""megatron-core distributed checkpoint (any TP/PP, converted or trained) → Hugging Face LlamaForCausalLM folder.

The checkpoint is read one layer at a time through megatron-core's own loader (a request for just that
layer's slices of each stacked tensor), turned into HF tensors (``layout``), and written into safetensors
shards as it goes (``hf_writer`` streams each tensor to its shard file): memory holds about one layer. The embedding and output
rows are trimmed to the flavor's exported size (docs/spec.md §1: 32512 base / 32768 expressive for LLaMA-2). The
folder gets ``config.json`` (exported vocab size, ``rope_theta``), ``generation_config.json`` and the
tokenizer files (docs/spec.md §6) and ``checksums.json``, and is written atomically. The checkpoint's checksums are
verified while it is read; a corrupt newest checkpoint of a training folder is skipped for the next older one
(a warning; ``fallback=False``: the error).

Hyper-parameters come from ``spirit_checkpoint.json`` (written by ``hf-to-megatron`` and by the trainer:
``checkpoint.info``) or from an explicit model config; the tokenizer from ``--tokenizer`` or the checkpoint's
``tokenizer/`` copy.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint.checksums import CorruptCheckpoint, check_manifest, fallback_warning, verified, write_manifest
from ..checkpoint.folder import resolve_all
from ..checkpoint.info import find_info, find_tokenizer, model_config_from_info
from ..model.config import ModelConfig, check_dtype
from . import layout as L



def hf_config_dict(model_cfg, vocab_size: int, dtype: torch.dtype, bos_id: int, eos_id: int) -> dict:
    """``config.json`` of a stock LlamaForCausalLM (LLaMA-2 keys; transformers 4.x and 5.x read them)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": model_cfg.hidden_size,
        "intermediate_size": model_cfg.ffn_hidden_size,
        "num_hidden_layers": model_cfg.num_layers,
        "num_attention_heads": model_cfg.num_attention_heads,
        "num_key_value_heads": model_cfg.query_groups,
        "head_dim": model_cfg.kv_channels,
        "hidden_act": "silu",
        "max_position_embeddings": model_cfg.seq_length,
        "initializer_range": model_cfg.init_method_std,
        "rms_norm_eps": model_cfg.norm_eps,
        "rope_theta": float(model_cfg.rope_base),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."),  # "bfloat16", as transformers writes it
    }


def check_checkpoint(meta: dict, ckpt: Path, model_cfg: ModelConfig, min_rows: int) -> tuple[int, torch.dtype]:
    """Keys and shapes against the model config; returns (vocabulary rows, dtype)."""
    if L.EMBEDDING not in meta:
        raise ValueError(f"{ckpt}: no {L.EMBEDDING} in the checkpoint: not a GPT model checkpoint")
    rows = meta[L.EMBEDDING].global_shape[0]
    if rows < min_rows:
        raise ValueError(
            f"{ckpt}: embedding has {rows} rows but the tokenizer has {min_rows} ids: wrong tokenizer for this checkpoint"
        )
    problems = []
    for key, shape in L.megatron_shapes(model_cfg, rows).items():
        want = (model_cfg.num_layers,) + shape if key in L.LAYER_KEYS else shape
        if key not in meta:
            problems.append(f"{key} missing")
        elif tuple(meta[key].global_shape) != want:
            problems.append(f"{key} has shape {list(meta[key].global_shape)}, expected {list(want)}")
    if problems:
        raise ValueError(f"{ckpt} does not match the model config: " + "; ".join(problems[:4]))
    return rows, meta[L.EMBEDDING].dtype


def _load(ckpt: Path, request: dict) -> dict:
    from megatron.core import dist_checkpointing

    # A partial request (one layer of each stacked tensor) on purpose: skip the whole-tensor coverage check.
    return dist_checkpointing.load(request, str(ckpt), validate_access_integrity=False)


def _layer_request(model_cfg: ModelConfig, rows: int, layer: int, dtype: torch.dtype) -> dict:
    from megatron.core.dist_checkpointing import ShardedTensor

    shapes = L.megatron_shapes(model_cfg, rows)
    # The layer axis as a real axis (local size 1), not a prepended one: megatron's prepended-axis path expects
    # every layer of the grid on some rank, which a one-layer request in a world of one is not.
    return {
        key: ShardedTensor.from_rank_offsets(
            key, torch.empty((1,) + shapes[key], dtype=dtype), (0, layer, model_cfg.num_layers), replica_id=0
        )
        for key in L.LAYER_KEYS
    }


def _global_request(key: str, shape, dtype: torch.dtype) -> dict:
    from megatron.core.dist_checkpointing import ShardedTensor

    return {key: ShardedTensor.from_rank_offsets(key, torch.empty(shape, dtype=dtype), replica_id=0)}


def megatron_to_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer_dir=None, model_cfg=None,
                   dtype: Optional[str] = None, max_shard_bytes: int = 5 * 1024**3, progress: bool = True,
                   fallback: bool = True, warn=print) -> Path:
    """Export; returns the output folder. ``model_cfg`` overrides the checkpoint's ``spirit_checkpoint.json``."""
    candidates = resolve_all(ckpt_dir)
    for i, ckpt in enumerate(candidates):
        try:
            return _export(ckpt, out_dir, tokenizer_dir, model_cfg, dtype, max_shard_bytes, progress, warn)
        except CorruptCheckpoint as e:
            if not fallback or i + 1 == len(candidates):
                raise
            warn(fallback_warning(e, candidates[i + 1]))
    raise AssertionError("unreachable")


def _export(ckpt: Path, out_dir, tokenizer_dir, model_cfg, dtype, max_shard_bytes: int, progress: bool,
            warn) -> Path:
    from megatron.core import dist_checkpointing
    from tqdm import tqdm

    from ..tokenizer.build import copy_tokenizer
    from ..tokenizer.tokenizer import SpiritTokenizer
    from ..utils.atomic import atomic_dir
    from ..parallel.local_group import local_group
    from .hf_writer import ShardedSafetensorsWriter

    check_manifest(ckpt, warn)
    info = find_info(ckpt)
    if model_cfg is None:
        if info is None:
            raise FileNotFoundError(f"{ckpt} has no spirit_checkpoint.json: pass the model config (--config)")
        model_cfg = model_config_from_info(info)
    tok_dir = find_tokenizer(ckpt, tokenizer_dir)
    tokenizer = SpiritTokenizer(tok_dir)
    vocab = tokenizer.vocab
    if info is not None and info.get("vocab", {}).get("base_size") not in (None, vocab.base_size):
        raise ValueError(
            f"tokenizer {tok_dir} has a base vocabulary of {vocab.base_size} but the checkpoint was made with "
            f"{info['vocab']['base_size']}"
        )
    wanted_dtype = check_dtype(dtype) if dtype is not None else None
    out_dir = Path(out_dir)

    with local_group(), atomic_dir(out_dir) as tmp, verified(ckpt):
        meta = dist_checkpointing.load_tensors_metadata(str(ckpt))
        rows, ckpt_dtype = check_checkpoint(meta, ckpt, model_cfg, vocab.full_size)
        out_dtype = wanted_dtype or ckpt_dtype
        export_rows = vocab.export_size

        def vocab_tensor(key):
            weight = _load(ckpt, _global_request(key, (rows, model_cfg.hidden_size), ckpt_dtype))[key]
            return L.trim_rows(weight, export_rows).to(out_dtype)

        order = [(n, shape, out_dtype) for n, shape in L.hf_shapes(model_cfg, export_rows).items()]
        writer = ShardedSafetensorsWriter(tmp, order, max_shard_bytes)
        writer.add(L.HF_EMBEDDING, vocab_tensor(L.EMBEDDING))
        for layer in tqdm(range(model_cfg.num_layers), desc="megatron→hf", unit="layer", disable=not progress):
            loaded = _load(ckpt, _layer_request(model_cfg, rows, layer, ckpt_dtype))
            for key in L.LAYER_KEYS:
                parts = L.layer_from_megatron(key, loaded[key][0], model_cfg)
                for part, tensor in zip(L.HF_LAYER_PARTS[key], parts):
                    writer.add(L.hf_layer_name(layer, part), tensor.to(out_dtype))
            del loaded
        norm = _load(ckpt, _global_request(L.FINAL_NORM, (model_cfg.hidden_size,), ckpt_dtype))[L.FINAL_NORM]
        writer.add(L.HF_FINAL_NORM, norm.to(out_dtype))
        writer.add(L.HF_OUTPUT, vocab_tensor(L.OUTPUT))
        writer.close()
        config = hf_config_dict(model_cfg, export_rows, out_dtype, tokenizer.bos_id, tokenizer.eos_id)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        copy_tokenizer(tok_dir, tmp)
        write_manifest(tmp)
    return out_dir
