"""Save a megatron-core distributed checkpoint whose tensors are computed one at a time while writing.

``megatron.core.dist_checkpointing.save`` takes a sharded state dict whose ShardedTensors hold their data;
its default ``torch_dist`` writer copies every tensor before writing (it is built for async saves), so a
converter would hold the whole model. This module plugs a save strategy into that same ``save`` (megatron
still writes ``common.pt``, ``metadata.json``, and validates the sharding) that hands the state dict to
``torch.distributed.checkpoint`` with

- ShardedTensors whose data are *meta* tensors (shape and dtype only), and
- a planner whose ``resolve_data`` asks a ``produce(key, offsets, sizes)`` callback for each chunk when the
  writer reaches it, with one file per chunk so that nothing is held after its file is written.

Peak memory is then about the largest chunk plus what ``produce`` caches. The files are the standard
``torch_dist`` format: megatron-core loads (and reshards) them like any checkpoint it wrote itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

#: produce(sharded key, global offsets of the chunk, chunk sizes) -> tensor of exactly those sizes.
Producer = Callable[[str, tuple[int, ...], tuple[int, ...]], torch.Tensor]


def _planner_class():
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner
    from torch.distributed.checkpoint.planner import WriteItemType

    class LazySavePlanner(MCoreSavePlanner):
        """Resolves tensor write items through ``produce`` instead of reading the (meta) state dict."""

        def __init__(self, produce: Producer, on_item: Optional[Callable[[str], None]] = None):
            super().__init__(dedup_replicated_tensors=False, flatten_state_dict=False)
            self.produce = produce
            self.on_item = on_item

        def resolve_data(self, write_item):
            if write_item.type == WriteItemType.BYTE_IO:
                return super().resolve_data(write_item)
            key = write_item.index.fqn
            offsets = tuple(int(x) for x in write_item.tensor_data.chunk.offsets)
            sizes = tuple(int(x) for x in write_item.tensor_data.chunk.sizes)
            tensor = self.produce(key, offsets, sizes)
            if tuple(tensor.shape) != sizes:
                raise RuntimeError(f"produced {tuple(tensor.shape)} for {key} at {offsets}, expected {sizes}")
            if self.on_item is not None:
                self.on_item(key)
            return tensor.contiguous()

    return LazySavePlanner


def streaming_strategy(produce: Producer, on_item: Optional[Callable[[str], None]] = None):
    """A megatron-core ``SaveShardedStrategy`` (backend ``torch_dist`` v1) that writes lazily via ``produce``."""
    from megatron.core.dist_checkpointing.strategies.base import SaveShardedStrategy
    from megatron.core.dist_checkpointing.strategies.torch import (
        _replace_state_dict_keys_with_sharded_keys,
        mcore_to_pyt_state_dict,
    )
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint import save as dcp_save

    planner_cls = _planner_class()

    class StreamingTorchDistSave(SaveShardedStrategy):
        def __init__(self):
            super().__init__("torch_dist", 1)

        @property
        def can_handle_sharded_objects(self):
            return True

        def save(self, sharded_state_dict, checkpoint_dir):
            flat, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, keep_only_main_replica=True)
            pyt_state_dict = mcore_to_pyt_state_dict(flat, False)
            # One file per chunk: torch's writer keeps every tensor of a file alive until the file is closed.
            writer = FileSystemWriter(Path(checkpoint_dir), single_file_per_rank=False, thread_count=1)
            dcp_save(pyt_state_dict, storage_writer=writer, planner=planner_cls(produce, on_item))

    return StreamingTorchDistSave()


def meta_sharded_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype, layer: Optional[int] = None,
                        num_layers: Optional[int] = None, split: Optional[tuple[int, int, int]] = None):
    """A ShardedTensor with no data: one layer (``layer`` of ``num_layers`` stacked on a leading axis) or a whole
    tensor; ``split`` = (axis, index, count) marks it as one of ``count`` equal pieces along ``axis``."""
    from megatron.core.dist_checkpointing import ShardedTensor

    offsets = []
    prepend = 0
    if layer is not None:
        offsets.append((0, layer, num_layers))
        prepend = 1
    if split is not None:
        axis, index, count = split
        offsets.append((axis + prepend, index, count))
    data = torch.empty(shape, dtype=dtype, device="meta")
    return ShardedTensor.from_rank_offsets(key, data, *offsets, replica_id=0, prepend_axis_num=prepend)
