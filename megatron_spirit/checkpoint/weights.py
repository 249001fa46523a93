"""Model weights in a megatron-core distributed checkpoint: the request, the strict check, the weights-only load.

Checkpoint tensors are keyed by GPTModel's own sharded keys (global layer numbers), so a checkpoint loads
whatever the TP/PP/VPP layout: megatron-core reshards on load (each rank asks for its own slices: its TP shard of
each tensor, its pipeline stage's layers). Converted Hugging Face checkpoints use the same keys. ``_extra_state``
entries (the modules' extra state: nothing for the local spec, FP8 metadata for Transformer Engine) are not
weights: a weights-only load does not request them.
"""
from __future__ import annotations

import os
from pathlib import Path

EXTRA_STATE = "_extra_state"


def unwrap(chunk):
    """The GPTModel inside DDP / Float16Module wrappers: its own sharded_state_dict has the canonical keys."""
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def model_sharded_state_dict(model: list) -> dict:
    """One entry per model chunk (``model``, or ``model0``… with virtual pipeline stages)."""
    if len(model) == 1:
        return {"model": unwrap(model[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(m).sharded_state_dict() for i, m in enumerate(model)}


def _drop_extra_state(tree):
    if isinstance(tree, dict):
        return {k: _drop_extra_state(v) for k, v in tree.items() if not str(k).endswith(EXTRA_STATE)}
    return tree


def load_chunk(chunk, state: dict, where: str | os.PathLike) -> None:
    """Put loaded tensors into a model chunk; raises unless every weight was there (extra state aside)."""
    missing, unexpected = unwrap(chunk).load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(EXTRA_STATE)]
    unexpected = [k for k in unexpected if not k.endswith(EXTRA_STATE)]
    if missing or unexpected:
        raise RuntimeError(f"{where} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_weights(model: list, path: str | os.PathLike, fallback: bool = True, warn=print) -> Path:
    """Load the weights of a checkpoint folder, or of a training folder's newest intact checkpoint, into
    ``model`` (this rank's chunks, wrapped or not); collective over all ranks. Returns the checkpoint folder
    loaded.

    Checksums are verified (:mod:`.checksums`); a corrupt newest checkpoint of a training folder makes it try the
    next older one, with a warning, unless ``fallback`` is False. Vocabulary rows may differ from the model's:
    megatron-core loads the overlap of embedding/output rows. No optimizer state, step or data position is read
    (a ``--finetune`` start).
    """
    from .checksums import CorruptCheckpoint, fallback_warning, load_verified
    from .folder import resolve_all

    candidates = resolve_all(path)
    sharded = model_sharded_state_dict(model)
    for i, ckpt in enumerate(candidates):
        try:
            loaded = load_verified(_drop_extra_state(sharded), ckpt)
        except CorruptCheckpoint as e:
            if not fallback or i + 1 == len(candidates):
                raise
            warn(fallback_warning(e, candidates[i + 1]))
            continue
        for key, chunk in zip(sharded, model):
            load_chunk(chunk, loaded[key], ckpt)
        return ckpt
    raise AssertionError("unreachable")

