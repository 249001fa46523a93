"""Optimizer state in *model space*, so a resume works at the same layout (exactly) and at another TP/PP/DP.

Why this file exists: in megatron-core 0.16.1 the distributed optimizer's checkpoint formats do not cover our
case (see docs/notes/megatron-core-on-cpu.md): ``fully_sharded_model_space`` builds ShardedTensors with
``flattened_range``, which dist-checkpointing now rejects; ``dp_reshardable`` only reloads at the same TP/PP;
``fully_reshardable`` fails with ``KeyError: 'step'`` on the torch AdamW path. So for the distributed optimizer
we gather each parameter's state across the optimizer's data-parallel group into the parameter's own (TP-local)
shape and save it with the *model parameter's* sharding metadata — the same key scheme megatron-core uses for the
non-distributed optimizer (``optimizer.state.{exp_avg,exp_avg_sq,fp32_param}.<param key>``), which dist
checkpointing reshards on load like any weight. The non-distributed optimizer uses megatron-core's own
``sharded_state_dict`` unchanged (it resumes exactly across layouts).

Adam's step counter is saved once (every parameter steps together here) and restored as a separate tensor per
parameter: megatron-core's own restore shares one tensor across parameters, which torch's AdamW then increments
once per parameter per step.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as dist
from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory
from megatron.core.dist_checkpointing.utils import extract_sharded_tensors_and_factories
from megatron.core.dist_checkpointing.dict_utils import nested_values

STATE_KEYS = ("fp32_param", "exp_avg", "exp_avg_sq")


def sub_optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def is_distributed(opt) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return isinstance(opt, DistributedOptimizer)


def _param_to_sharded(model_sharded_sd) -> dict:
    tensors, _ = extract_sharded_tensors_and_factories(model_sharded_sd)
    return {sh.data: sh for sh in nested_values(tensors)}


def _dist_opt_params(opt):
    """(model_param, [start, end) of the flattened param this DP rank owns) for every param of the optimizer.

    Every rank walks the same params in the same order (the grad buffers' index maps, which are identical
    across ranks) — the gather is a collective; a rank owning no part of a param gets an empty range.
    """
    for buffer in opt.buffers:
        for model_param in sorted(buffer.param_index_map, key=lambda p: buffer.param_index_map[p][0]):
            where = opt.model_param_gbuf_map.get(model_param)
            if where is None:
                yield model_param, 0, 0
                continue
            gbuf_index, dtype, bucket_index = where
            r = opt.gbuf_ranges[gbuf_index][dtype][bucket_index]["param_map"][model_param]["param"]
            yield model_param, r.start, r.end


def _adam_step(opt) -> int:
    for state in opt.optimizer.state.values():
        if "step" in state:
            return int(state["step"].item()) if torch.is_tensor(state["step"]) else int(state["step"])
    return 0


def _ensure_adam_state(opt, step: int) -> None:
    """Allocate AdamW state (zeros) for params that have none yet, each with its *own* step tensor."""
    for group in opt.optimizer.param_groups:
        for p in group["params"]:
            st = opt.optimizer.state[p]
            if "exp_avg" not in st:
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["step"] = torch.tensor(float(step), dtype=torch.float32)


def sharded_state_dict(optimizer, model_sharded_sd, is_loading: bool) -> dict:
    """The optimizer's sharded state for dist_checkpointing.save/load (call on every rank)."""
    out = {}
    for i, opt in enumerate(sub_optimizers(optimizer)):
        if not is_distributed(opt):
            out[f"opt{i}"] = opt.sharded_state_dict(model_sharded_sd, is_loading=is_loading)
            continue
        lookup = _param_to_sharded(model_sharded_sd)
        group = opt.data_parallel_group
        state = {}
        if is_loading:
            _ensure_adam_state(opt, 0)
        # Entries are indexed by position (not by key: layers share one key, told apart by their offsets).
        for index, (model_param, start, end) in enumerate(_dist_opt_params(opt)):
            meta = lookup.get(model_param)
            if meta is None:
                raise KeyError(f"parameter of shape {tuple(model_param.shape)} is not in the model's sharded state")
            full = {}
            if is_loading:
                for k in STATE_KEYS:
                    full[k] = torch.empty(model_param.shape, dtype=torch.float32, device=model_param.device)
            else:
                local = opt._get_main_param_and_optimizer_states(model_param) if end > start else None
                if local is not None:
                    local["fp32_param"] = local.pop("param")
                for k in STATE_KEYS:
                    flat = torch.zeros(model_param.numel(), dtype=torch.float32, device=model_param.device)
                    if local is not None:
                        flat[start:end] = local[k].detach().float().view(-1)
                    if group is not None and dist.get_world_size(group) > 1:
                        dist.all_reduce(flat, group=group)  # disjoint ranges: the sum is an exact gather
                    full[k] = flat.view(model_param.shape)
            entry = {}
            for k, t in full.items():
                kwargs = dict(key=f"optimizer.state.{k}.{meta.key}", data=t)
                if not isinstance(meta, ShardedTensorFactory):
                    kwargs["dtype"] = t.dtype
                entry[k] = replace(meta, **kwargs)
            state[index] = entry
        out[f"opt{i}"] = {"param_state": state}
    return out


def common_state(optimizer) -> dict:
    """What is not per-parameter: Adam's step count per sub-optimizer (saved with the common state)."""
    return {f"opt{i}": _adam_step(opt) for i, opt in enumerate(sub_optimizers(optimizer)) if is_distributed(opt)}


def load_state(optimizer, loaded: dict, common: dict) -> None:
    """Put loaded state (from :func:`sharded_state_dict` with ``is_loading=True``) into the optimizer."""
    for i, opt in enumerate(sub_optimizers(optimizer)):
        sub = loaded[f"opt{i}"]
        if not is_distributed(opt):
            opt.load_state_dict(sub)
            _unshare_step(opt)
            continue
        step = int(common.get(f"opt{i}", 0))
        _ensure_adam_state(opt, step)
        for index, (model_param, start, end) in enumerate(_dist_opt_params(opt)):
            if end <= start:
                continue
            entry = sub["param_state"][index]
            tensors = {k: entry[k].reshape(-1)[start:end] for k in STATE_KEYS}
            tensors["param"] = tensors.pop("fp32_param")
            tensors["step"] = torch.tensor(float(step))  # copied into the param's own step tensor
            with torch.no_grad():
                opt._set_main_param_and_optimizer_states(model_param, tensors)
        if hasattr(opt, "_copy_main_params_to_model_params"):
            opt._copy_main_params_to_model_params()


def _unshare_step(opt) -> None:
    inner = getattr(opt, "optimizer", None)
    if inner is None:
        return
    for state in inner.state.values():
        if "step" in state and torch.is_tensor(state["step"]):
            state["step"] = state["step"].detach().clone()
