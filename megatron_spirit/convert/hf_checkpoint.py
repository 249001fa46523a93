"""Read a local Hugging Face checkpoint tensor by tensor, without loading the whole model.

Accepts ``model.safetensors``, ``pytorch_model.bin``, or their sharded forms with an index json
(``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``). Shapes and dtypes are known before any
tensor data is read (safetensors headers; ``.bin`` files are memory-mapped), so every check can run before a
converter writes anything.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_SINGLE = "pytorch_model.bin"


class HFCheckpoint:
    """Lazy access to an HF folder's tensors: ``names``, ``shape(name)``, ``dtype(name)``, ``get(name)``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"Hugging Face checkpoint folder not found: {self.folder}")
        config_file = self.folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} is missing: not a Hugging Face model folder")
        try:
            self.config = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_file} is not valid JSON: {e}") from e
        self._handles: dict[str, object] = {}
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self.weight_map = self._weight_map()
        missing = sorted({f for f in self.weight_map.values() if not (self.folder / f).is_file()})
        if missing:
            raise FileNotFoundError(
                f"{self.folder}: weight shard(s) listed in the index are missing: {', '.join(missing)}"
            )

    def _weight_map(self) -> dict[str, str]:
        for index in (SAFE_INDEX, BIN_INDEX):
            path = self.folder / index
            if path.is_file():
                try:
                    weight_map = json.loads(path.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ValueError(f"{path}: not a valid index file (no 'weight_map'): {e}") from e
                return dict(weight_map)
        for single in (SAFE_SINGLE, BIN_SINGLE):
            if (self.folder / single).is_file():
                return {name: single for name in self._open(single).keys()}
        raise FileNotFoundError(
            f"{self.folder}: no weights found (expected {SAFE_SINGLE}, {BIN_SINGLE} or a sharded index "
            f"{SAFE_INDEX} / {BIN_INDEX})"
        )

    def _open(self, file: str):
        if file not in self._handles:
            path = self.folder / file
            try:
                if file.endswith(".safetensors"):
                    from safetensors import safe_open

                    self._handles[file] = safe_open(str(path), framework="pt")
                else:
                    self._handles[file] = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            except Exception as e:
                raise ValueError(f"cannot read weight file {path}: {e}") from e
        return self._handles[file]

    @property
    def names(self) -> list[str]:
        return list(self.weight_map)

    def _file_of(self, name: str) -> str:
        try:
            return self.weight_map[name]
        except KeyError:
            raise KeyError(f"{self.folder}: tensor {name!r} is not in the checkpoint") from None

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """(shape, dtype) without reading the data."""
        if name not in self._meta:
            file = self._file_of(name)
            handle = self._open(file)
            if name not in handle.keys():
                raise KeyError(f"{self.folder / file}: tensor {name!r} listed in the index is not in the file")
            if file.endswith(".safetensors"):
                sl = handle.get_slice(name)
                shape = tuple(sl.get_shape())
                dtype = SAFETENSORS_DTYPES[sl.get_dtype()]
            else:
                t = handle[name]
                shape, dtype = tuple(t.shape), t.dtype
            self._meta[name] = (shape, dtype)
        return self._meta[name]

    def get(self, name: str) -> torch.Tensor:
        """The tensor's data (a fresh CPU tensor, read now)."""
        file = self._file_of(name)
        if file.endswith(".safetensors"):
            # A short-lived handle: its memory map (and the file pages it pulled in) goes away after the read.
            from safetensors import safe_open

            with safe_open(str(self.folder / file), framework="pt") as f:
                return f.get_tensor(name)
        return self._open(file)[name].clone()


#: safetensors header dtype names (the writer uses the same table, inverted).
SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
