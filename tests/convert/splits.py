"""What one TP/PP rank holds of a global Megatron tensor: the tests' independent statement of megatron-core's
split rules, to check the shards it loads from a converted checkpoint (megatron-core does the splitting)."""
from __future__ import annotations

from typing import Optional

import torch

from megatron_spirit.convert import layout as L

#: Axis each key is split on under TP (None: replicated). fc1 is special: see :func:`tp_shard`.
TP_AXIS: dict[str, Optional[int]] = {
    L.EMBEDDING: 0,
    L.OUTPUT: 0,
    L.QKV: 0,
    L.FC1: 0,
    L.PROJ: 1,
    L.FC2: 1,
    L.INPUT_NORM: None,
    L.MLP_NORM: None,
    L.FINAL_NORM: None,
}


def tp_shard(key: str, tensor: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    """What TP rank ``rank`` of ``tp`` holds of a (one-layer) global Megatron tensor.

    QKV rows are whole query groups per rank (groups are contiguous, so a plain row split); fc1 holds its
    slice of gate followed by its slice of up.
    """
    axis = TP_AXIS[key]
    if axis is None:
        return tensor
    if key == L.FC1:
        gate, up = tensor.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp, dim=0)[rank], up.chunk(tp, dim=0)[rank]], dim=0)
    return tensor.chunk(tp, dim=axis)[rank]


def pp_layers(num_layers: int, pp: int, rank: int) -> range:
    """Global layer indices held by pipeline rank ``rank`` (even split, no virtual stages)."""
    per = num_layers // pp
    return range(rank * per, (rank + 1) * per)
