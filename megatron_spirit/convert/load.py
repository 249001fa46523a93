"""Weights-only load of a converted (or trained) checkpoint into GPTModel chunks at any TP/PP.

megatron-core reshards on load: each rank asks for its own slices (its TP shard of each tensor, its pipeline
stage's layers), so the checkpoint's layout never has to match the run's. ``_extra_state`` entries (the
modules' extra state: nothing for the local spec, FP8 metadata for Transformer Engine) are not part of the
weights and are not requested.
"""
from __future__ import annotations

import os
from pathlib import Path


def _unwrap(module):
    while hasattr(module, "module"):  # DDP / Float16Module wrappers
        module = module.module
    return module


def _drop_extra_state(tree):
    if isinstance(tree, dict):
        return {k: _drop_extra_state(v) for k, v in tree.items() if not str(k).endswith("_extra_state")}
    return tree


def load_megatron_weights(model_chunks: list, ckpt_dir: str | os.PathLike) -> None:
    """Load the model weights of ``ckpt_dir`` into ``model_chunks`` (this rank's GPTModel chunks, e.g.
    ``build_model(...).chunks``); collective over all ranks. Raises if any weight is missing or mis-shaped
    (vocabulary rows may differ: megatron-core loads the overlap of embedding/output rows)."""
    from megatron.core import dist_checkpointing

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "metadata.json").is_file():
        raise FileNotFoundError(f"{ckpt_dir} is not a megatron-core distributed checkpoint (no metadata.json)")
    modules = [_unwrap(c) for c in model_chunks]
    request = {f"model{i}": _drop_extra_state(m.sharded_state_dict()) for i, m in enumerate(modules)}
    loaded = dist_checkpointing.load(request, str(ckpt_dir))
    for i, module in enumerate(modules):
        result = module.load_state_dict(loaded[f"model{i}"], strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"{ckpt_dir}: chunk {i} did not load cleanly: missing {missing}, unexpected {result.unexpected_keys}"
            )
