"""Write Hugging Face weights as safetensors shards, streaming each tensor to disk as it arrives.

Every tensor's name, shape and dtype is known before the first one is computed (from the checkpoint's
metadata), so the shards and each shard's header can be laid out in advance; tensors are then appended to the
open shard file in that order and dropped. Memory holds one tensor, not one shard. The files are plain
safetensors (8-byte header length, JSON header with ``data_offsets``, raw little-endian data) and names follow
transformers' convention (``model-00001-of-00003.safetensors`` + ``model.safetensors.index.json``, or a single
``model.safetensors``), so ``from_pretrained`` loads them as they are.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Sequence

import torch

from .hf_checkpoint import SAFE_INDEX as INDEX
from .hf_checkpoint import SAFETENSORS_DTYPES

_DTYPES = {torch_dtype: name for name, torch_dtype in SAFETENSORS_DTYPES.items()}


def _nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


class ShardedSafetensorsWriter:
    """``add(name, tensor)`` in exactly the order of ``layout`` (a list of (name, shape, dtype)); ``close()``."""

    def __init__(self, folder: str | os.PathLike, layout: Sequence[tuple[str, tuple[int, ...], torch.dtype]],
                 max_shard_bytes: int = 5 * 1024**3):
        if sys.byteorder != "little":  # pragma: no cover
            raise RuntimeError("safetensors data is little-endian; this writer assumes a little-endian machine")
        self.folder = Path(folder)
        self.layout = [(n, tuple(int(x) for x in s), d) for n, s, d in layout]
        shards: list[list[int]] = [[]]
        size = 0
        for i, (_, shape, dtype) in enumerate(self.layout):
            nbytes = _nbytes(shape, dtype)
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(i)
            size += nbytes
        n = len(shards)
        self.files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._shard_of = {i: s for s, items in enumerate(shards) for i in items}
        self._shards = shards
        self._next = 0
        self._stream = None
        self._open_shard = -1
        self.total_bytes = sum(_nbytes(s, d) for _, s, d in self.layout)

    def _start_shard(self, shard: int) -> None:
        if self._stream is not None:
            self._stream.close()
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for i in self._shards[shard]:
            name, shape, dtype = self.layout[i]
            nbytes = _nbytes(shape, dtype)
            header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
        self._stream = open(self.folder / self.files[shard], "wb")
        self._stream.write(struct.pack("<Q", len(raw)))
        self._stream.write(raw)
        self._open_shard = shard

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self.layout):
            raise RuntimeError(f"unexpected tensor {name}: all {len(self.layout)} tensors already written")
        want_name, want_shape, want_dtype = self.layout[self._next]
        if (name, tuple(tensor.shape), tensor.dtype) != (want_name, want_shape, want_dtype):
            raise RuntimeError(
                f"expected {want_name} {list(want_shape)} {want_dtype}, got {name} {list(tensor.shape)} {tensor.dtype}"
            )
        shard = self._shard_of[self._next]
        if shard != self._open_shard:
            self._start_shard(shard)
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        self._stream.write(memoryview(data))
        self._next += 1

    def close(self) -> list[str]:
        """Finish the last shard and write the index (several shards); returns the file names."""
        if self._next != len(self.layout):
            raise RuntimeError(f"only {self._next} of {len(self.layout)} tensors were written")
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if len(self.files) > 1:
            weight_map = {self.layout[i][0]: self.files[s] for s, items in enumerate(self._shards) for i in items}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return self.files
