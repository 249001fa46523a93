"""Write Hugging Face weights as safetensors shards while tensors arrive one at a time.

A shard is flushed as soon as adding the next tensor would pass ``max_shard_bytes``, so memory holds at most
one shard. Names follow transformers' convention (``model-00001-of-00003.safetensors`` + index json; a single
``model.safetensors`` when everything fits in one shard), so ``from_pretrained`` loads them as they are.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"


class ShardedSafetensorsWriter:
    def __init__(self, folder: str | os.PathLike, max_shard_bytes: int = 5 * 1024**3):
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        part = len(self._shards)
        save_file(self._pending, str(self.folder / f".part-{part:05d}.safetensors"), metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Flush, give the shards their final names, write the index; returns the file names."""
        if self._pending:
            self._flush()
        n = len(self._shards)
        if n == 1:
            os.replace(self.folder / ".part-00000.safetensors", self.folder / "model.safetensors")
            return ["model.safetensors"]
        names, weight_map = [], {}
        for i, tensors in enumerate(self._shards):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / f".part-{i:05d}.safetensors", self.folder / name)
            names.append(name)
            weight_map.update({t: name for t in tensors})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return names
