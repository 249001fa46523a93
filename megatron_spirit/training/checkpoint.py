"""Save and load training state with megatron-core's dist_checkpointing.

A checkpoint holds the model (sharded per TP/PP rank, reshardable on load), the optimizer state in model space
(:mod:`.optimizer_state`), the LR scheduler, the step, the data position (samples consumed), the skipped-step
count and every rank's RNG state. The common (non-tensor) part is saved by rank 0. Writing goes to a temp folder
that becomes ``iter_NNNNNNN`` and then ``latest`` only when complete (:mod:`.checkpoint_dir`).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject

from . import optimizer_state
from .checkpoint_dir import CheckpointDir


def unwrap(chunk):
    """The GPTModel inside DDP (and, in bf16, Float16Module): its sharded_state_dict has the canonical keys (no
    ``module.``), and its load_state_dict reports missing keys (Float16Module's returns None)."""
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def model_sharded_state_dict(model: list) -> dict:
    """One entry per model chunk (``model``, or ``model0``… with virtual pipeline stages).

    Checkpoint tensors are keyed by GPTModel's own sharded keys (global layer numbers), so a checkpoint loads
    whatever the TP/PP/VPP layout, and converted Hugging Face checkpoints use the same keys.
    """
    if len(model) == 1:
        return {"model": unwrap(model[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(m).sharded_state_dict() for i, m in enumerate(model)}


def _merged_model_sd(model_sd: dict) -> dict:
    merged = {}
    for i, sd in enumerate(model_sd.values()):
        merged[f"chunk{i}"] = sd
    return merged


def _layout() -> dict:
    return {
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "dp": parallel_state.get_data_parallel_world_size(),
    }


def _rng_object() -> ShardedObject:
    state = {
        "random": random.getstate(),
        "np": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    pp, tp, dp = (parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_tensor_model_parallel_rank(),
                  parallel_state.get_data_parallel_rank())
    shape = (parallel_state.get_pipeline_model_parallel_world_size(),
             parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_data_parallel_world_size())
    return ShardedObject("rng_state", state, shape, (pp, tp, dp), replica_id=0)


def _set_rng(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _is_distributed(optimizer) -> bool:
    return any(optimizer_state.is_distributed(o) for o in optimizer_state.sub_optimizers(optimizer))


def save(ckpt_dir: CheckpointDir, step: int, model: list, optimizer, scheduler, extra: dict,
         keep_last: int | None = None, describe=None) -> Path:
    """Collective: every rank calls it. Returns the final folder.

    ``describe(folder)``, called on rank 0 before the folder is committed, adds the files that make the
    checkpoint self-describing (``spirit_checkpoint.json`` and the tokenizer, so it exports with no arguments).
    """
    rank0 = dist.get_rank() == 0
    if rank0:
        tmp = ckpt_dir.begin(step)
        if describe is not None:
            describe(tmp)
    dist.barrier()
    model_sd = model_sharded_state_dict(model)
    state = dict(model_sd)
    state["optimizer"] = optimizer_state.sharded_state_dict(optimizer, _merged_model_sd(model_sd), is_loading=False)
    state["rng_state"] = _rng_object()
    state["common"] = {
        "step": step,
        "scheduler": scheduler.state_dict(),
        "optimizer_common": optimizer_state.common_state(optimizer),
        "layout": _layout(),
        "distributed_optimizer": _is_distributed(optimizer),
        **extra,
    }
    dist_checkpointing.save(state, str(ckpt_dir.temp_path(step)))
    dist.barrier()
    final = ckpt_dir.final_path(step)
    if rank0:
        ckpt_dir.commit(step, keep_last=keep_last)
    dist.barrier()
    return final


def load(path: str | Path, model: list, optimizer, scheduler) -> dict:
    """Restore a full training state (collective). Returns the common dict (step, data position, ...).

    RNG states are restored only when the layout matches the one saved; at another TP/PP/DP the model and
    optimizer state are resharded and the RNG starts from the run's seed.
    """
    path = str(path)
    common = dist_checkpointing.load_common_state_dict(path)["common"]
    if common.get("distributed_optimizer") != _is_distributed(optimizer):
        raise RuntimeError(
            f"{path} was saved with parallel.distributed_optimizer={common.get('distributed_optimizer')}; resume with "
            "the same setting (the layout may change), or start a new run from it with checkpoint.finetune_from "
            "(weights only)"
        )
    same_layout = common.get("layout") == _layout()
    model_sd = model_sharded_state_dict(model)
    request = dict(model_sd)
    request["optimizer"] = optimizer_state.sharded_state_dict(optimizer, _merged_model_sd(model_sd), is_loading=True)
    if same_layout:
        request["rng_state"] = _rng_object()
    loaded = dist_checkpointing.load(request, path)
    for key, m in zip(model_sd, model):
        _load_model_chunk(m, loaded[key])
    optimizer_state.load_state(optimizer, loaded["optimizer"], common["optimizer_common"])
    scheduler.load_state_dict(common["scheduler"])
    if same_layout:
        _set_rng(loaded["rng_state"])
    return common


def load_weights(path: str | Path, model: list) -> Path:
    """Weights only (a converted base model, or a training folder's newest checkpoint): the ``--finetune`` start."""
    from ..convert import load_megatron_weights

    path = Path(path)
    latest = CheckpointDir(path).latest()
    target = latest if latest is not None else path
    load_megatron_weights(model, target)
    return target


def _load_model_chunk(chunk, state: dict) -> None:
    missing, unexpected = unwrap(chunk).load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("._extra_state")]
    unexpected = [k for k in unexpected if not k.endswith("._extra_state")]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
