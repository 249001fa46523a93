"""Peak bytes of tensor storage allocated while a block runs, counted op by op (deterministic, unlike RSS).

A ``TorchDispatchMode`` sees every aten op the block runs on this thread (ours, megatron-core's and torch DCP's
alike): a CPU storage an op returns that none of its inputs had is an allocation; it counts until the storage
is freed (a weak reference, checked after every op). Views and in-place ops allocate nothing. Not seen: other
threads and processes, and memory that is not tensor storage (pickled objects, file buffers)::

    with AllocationPeak() as peak:
        dist_checkpointing.save(sharded, folder)
    peak.peak_bytes   # the most storage alive at once that the block allocated
"""
from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(values) -> dict:
    out = {}
    for v in tree_flatten(values)[0]:
        if isinstance(v, torch.Tensor) and v.device.type == "cpu" and not v.is_meta:
            try:
                st = v.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            out[st.data_ptr()] = st
    return out


class AllocationPeak(TorchDispatchMode):
    """Counts storages of at least ``min_bytes``."""

    def __init__(self, min_bytes: int = 0):
        super().__init__()
        self.min_bytes = min_bytes
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak_bytes = 0
        self.allocated_bytes = 0  # total over the block (a storage freed and allocated again counts twice)

    def _sweep(self) -> None:
        for ptr in [p for p, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(ptr)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        inputs = _storages((args, kwargs))
        for ptr, st in _storages(out).items():
            n = st.nbytes()
            if ptr in inputs or ptr in self.live or n < self.min_bytes or ptr == 0:
                continue
            self.live[ptr] = (StorageWeakRef(st), n)
            self.current += n
            self.allocated_bytes += n
        self.peak_bytes = max(self.peak_bytes, self.current)
        return out
