"""Optimizer state in *model space*, so a resume works at the same layout (exactly) and at another TP/PP/DP.

Why this file exists: in megatron-core 0.16.1 the distributed optimizer's checkpoint formats do not cover our
case (see docs/notes/megatron-core-on-cpu.md, docs/notes/optimizer-checkpoint.md): ``fully_sharded_model_space``
builds ShardedTensors with ``flattened_range``, which dist-checkpointing now rejects; ``dp_reshardable`` only
reloads at the same TP/PP; ``fully_reshardable`` fails with ``KeyError: 'step'`` on the torch AdamW path.

So for the distributed optimizer every data-parallel rank saves *the part it owns*, with no gather: the flat range
``[start, end)`` of a parameter that the optimizer gave this rank is cut into at most a few row-major boxes
(:func:`flat_range_boxes`: a partial row, whole rows, a partial row), each a view of the rank's own
``fp32_param``/``exp_avg``/``exp_avg_sq`` and each an unevenly sharded ShardedTensor (``axis_fragmentations=None``)
of the *model parameter's* global tensor — the key scheme megatron-core uses for the non-distributed optimizer
(``optimizer.state.{exp_avg,exp_avg_sq,fp32_param}.<param key>``). Every DP rank is the main replica of its own
boxes, so all D ranks write about 1/D of the state; nothing beyond the rank's own slice is allocated (the writer
copies those views once). Loading asks dist-checkpointing (torch DCP, which reads any box out of the saved chunks)
for the boxes of the range the rank owns *now*, at whatever TP/PP/DP, straight into the optimizer's tensors — again
no collective and no full-size tensor. The non-distributed optimizer uses megatron-core's own
``sharded_state_dict`` unchanged (it resumes exactly across layouts).

Adam's step counter is saved once (every parameter steps together here) and restored as a separate tensor per
parameter: megatron-core's own restore shares one tensor across parameters, which torch's AdamW then increments
once per parameter per step.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.distributed as dist
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory
from megatron.core.dist_checkpointing.utils import extract_sharded_tensors_and_factories

STATE_KEYS = ("fp32_param", "exp_avg", "exp_avg_sq")
_LOCAL_NAME = {"fp32_param": "param", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


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
    across ranks); a rank owning no part of a param gets an empty range.
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


def flat_range_boxes(shape: tuple, start: int, end: int) -> list[tuple[tuple, tuple, int]]:
    """The flat range ``[start, end)`` of a row-major tensor of ``shape`` as boxes ``(offset, size, flat_start)``,
    in order; each box is itself contiguous, so it is a view of the flat range (at most 2·ndim−1 boxes)."""
    if end <= start:
        return []
    if len(shape) <= 1:
        return [((start,), (end - start,), start)] if shape else [((), (), 0)]
    inner = math.prod(shape[1:])
    first, last = start // inner, end // inner
    if first == last:  # inside one row
        return [((first, *o), (1, *s), first * inner + f)
                for o, s, f in flat_range_boxes(tuple(shape[1:]), start - first * inner, end - first * inner)]
    out = []
    if start % inner:
        out += [((first, *o), (1, *s), first * inner + f)
                for o, s, f in flat_range_boxes(tuple(shape[1:]), start % inner, inner)]
        first += 1
    if last > first:
        out.append(((first,) + (0,) * (len(shape) - 1), (last - first, *shape[1:]), first * inner))
    if end % inner:
        out += [((last, *o), (1, *s), last * inner + f)
                for o, s, f in flat_range_boxes(tuple(shape[1:]), 0, end % inner)]
    return out


def _pieces(meta, model_param) -> list[tuple[ShardedTensor, int]]:
    """The plain ShardedTensors a parameter is saved as, each with its flat offset in the parameter: one for a
    ShardedTensor; for a factory (SwiGLU's fused fc1: two halves, each TP-sharded) the tensors it builds, which
    must be contiguous views of the parameter."""
    if not isinstance(meta, ShardedTensorFactory):
        return [(meta, 0)]
    built = [t for t in nested_values(meta.build_fn(meta.key, model_param, meta.replica_id, None))]
    out = []
    base, size = model_param.data_ptr(), model_param.element_size()
    for t in built:
        offset = (t.data.data_ptr() - base) // size
        if not (isinstance(t, ShardedTensor) and t.data.is_contiguous()
                and 0 <= offset and offset + t.data.numel() <= model_param.numel()):
            raise ValueError(f"the sharded-state factory of {meta.key} does not build contiguous views of the "
                             "parameter; its optimizer state cannot be saved by range")
        out.append((t, offset))
    return sorted(out, key=lambda x: x[1])  # flat order: the boxes of a range then follow it (load_state)


def _own_replica(replica_id):
    """The model parameter's replica id with the data-parallel part (megatron-core puts it last) set to 0: each
    DP rank is the main replica of the boxes it owns; TP replicas (e.g. layer norms) stay replicas."""
    if isinstance(replica_id, tuple):
        return replica_id[:-1] + (0,)
    return 0


def _range_shards(meta, model_param, start: int, end: int, flats: dict) -> dict:
    """{state key: [ShardedTensor box, ...]} for the flat range ``[start, end)`` of ``model_param``, each box a view
    of ``flats[state key]`` (the rank's tensor of that range)."""
    out = {k: [] for k in flats}
    for piece, offset in _pieces(meta, model_param):
        lo, hi = max(start, offset), min(end, offset + piece.data.numel())
        p = piece.prepend_axis_num
        for box_offset, box_size, flat in flat_range_boxes(tuple(piece.local_shape), lo - offset, hi - offset):
            at = offset + flat - start
            n = math.prod(box_size)
            global_offset = piece.global_offset[:p] + tuple(
                g + o for g, o in zip(piece.global_offset[p:], box_offset))
            # Prepended (layer) axes become real axes of size 1: megatron-core 0.16.1 writes an unevenly sharded
            # tensor's chunk without them (DCP then fails on the short chunk size); the stored layout is the same.
            shape = (1,) * p + tuple(box_size)
            for k, t in flats.items():
                out[k].append(ShardedTensor(
                    key=f"optimizer.state.{k}.{piece.key}", data=t[at:at + n].view(shape), dtype=t.dtype,
                    local_shape=shape, global_shape=piece.global_shape, global_offset=global_offset,
                    axis_fragmentations=None, replica_id=_own_replica(piece.replica_id),
                    allow_shape_mismatch=piece.allow_shape_mismatch))
    return out


def _local_flats(opt, model_param) -> dict:
    local = opt._get_main_param_and_optimizer_states(model_param)
    return {k: local[_LOCAL_NAME[k]].detach().view(-1) for k in STATE_KEYS}


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


def _lookup(lookup: dict, model_param):
    meta = lookup.get(model_param)
    if meta is None:
        raise KeyError(f"parameter of shape {tuple(model_param.shape)} is not in the model's sharded state")
    return meta


def sharded_state_dict(optimizer, model_sharded_sd, is_loading: bool) -> dict:
    """The optimizer's sharded state for dist_checkpointing.save/load (call on every rank; no collective).

    For the distributed optimizer the tensors are views of this rank's own state (loading writes into them).
    """
    out = {}
    for i, opt in enumerate(sub_optimizers(optimizer)):
        if not is_distributed(opt):
            out[f"opt{i}"] = opt.sharded_state_dict(model_sharded_sd, is_loading=is_loading)
            continue
        lookup = _param_to_sharded(model_sharded_sd)
        if is_loading:
            _ensure_adam_state(opt, 0)
        # Entries are indexed by position (not by key: layers share one key, told apart by their offsets).
        state = {}
        for index, (model_param, start, end) in enumerate(_dist_opt_params(opt)):
            meta = _lookup(lookup, model_param)
            if end > start:
                state[index] = _range_shards(meta, model_param, start, end, _local_flats(opt, model_param))
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
            flats = _local_flats(opt, model_param)
            with torch.no_grad():
                for k in STATE_KEYS:
                    if isinstance(entry[k], list):  # boxes of the range, in order (usually loaded in place)
                        at = 0
                        for t in entry[k]:
                            dst = flats[k][at:at + t.numel()]
                            if dst.data_ptr() != t.data_ptr():
                                dst.copy_(t.reshape(-1))
                            at += t.numel()
                        if at != end - start:
                            raise ValueError(f"optimizer state {k} of parameter {index}: loaded {at} values for a "
                                             f"range of {end - start}")
                    else:  # a whole parameter (the gathered form, see _gathered_sharded_state_dict)
                        flats[k].copy_(entry[k].reshape(-1)[start:end])
                tensors = {_LOCAL_NAME[k]: v for k, v in flats.items()}
                tensors["step"] = torch.tensor(float(step))  # copied into the param's own step tensor
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


def _gathered_sharded_state_dict(optimizer, model_sharded_sd, is_loading: bool) -> dict:
    """The previous form, kept only to be measured against (benchmarks/bench_optimizer_checkpoint.py and the
    memory test): every parameter's state all-reduced into a full-size (TP-local) tensor on every DP rank and saved
    with the model parameter's sharding, so one DP rank writes it all. Same keys and global shapes as
    :func:`sharded_state_dict`: either reads the other's checkpoints; :func:`load_state` takes both."""
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
        for index, (model_param, start, end) in enumerate(_dist_opt_params(opt)):
            meta = _lookup(lookup, model_param)
            full = {}
            if is_loading:
                for k in STATE_KEYS:
                    full[k] = torch.empty(model_param.shape, dtype=torch.float32, device=model_param.device)
            else:
                local = _local_flats(opt, model_param) if end > start else None
                for k in STATE_KEYS:
                    flat = torch.zeros(model_param.numel(), dtype=torch.float32, device=model_param.device)
                    if local is not None:
                        flat[start:end] = local[k].float()
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
