"""A checkpoint's self-description: ``spirit_checkpoint.json`` and a ``tokenizer/`` copy beside megatron-core's files.

megatron-core's checkpoint stores tensors, not the model's hyper-parameters (head counts cannot be read back
from shapes), nor the tokenizer. The converter and the trainer both call :func:`describe` before a folder is
committed, so ``spirit-convert megatron-to-hf`` exports any checkpoint with no other argument.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

INFO_FILE = "spirit_checkpoint.json"
TOKENIZER_SUBDIR = "tokenizer"


def write_info(ckpt_dir: str | os.PathLike, model_cfg, tokenizer_base_size: int, flavor: str, padded_vocab: int,
               dtype: str, extra: Optional[dict] = None) -> Path:
    """Write the info file into ``ckpt_dir`` (call it on one rank)."""
    from ..utils.atomic import write_text

    info = {
        "model_config": dataclasses.asdict(model_cfg),
        "vocab": {"base_size": tokenizer_base_size, "flavor": flavor, "padded_size": padded_vocab},
        "dtype": dtype,
    }
    info.update(extra or {})
    path = Path(ckpt_dir) / INFO_FILE
    write_text(path, json.dumps(info, indent=2) + "\n")
    return path


def describe(folder: str | os.PathLike, model_cfg, tokenizer, padded_vocab: int, dtype: str,
             extra: Optional[dict] = None) -> None:
    """The info file and a copy of ``tokenizer``'s files (a ``SpiritTokenizer``; its folder may be a whole HF
    model's, whose weights are not copied) into ``folder`` (one rank)."""
    from ..tokenizer.build import copy_tokenizer

    v = tokenizer.vocab
    write_info(folder, model_cfg, v.base_size, v.flavor, padded_vocab, dtype, extra)
    copy_tokenizer(tokenizer.path, Path(folder) / TOKENIZER_SUBDIR)


def read_info(ckpt_dir: str | os.PathLike) -> Optional[dict]:
    path = Path(ckpt_dir) / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def find_info(ckpt: Path) -> Optional[dict]:
    """The checkpoint's own info file, else its training root's."""
    return read_info(ckpt) or read_info(ckpt.parent)


def model_config_from_info(info: dict):
    from ..model.config import ModelConfig

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in info["model_config"].items() if k in fields})


def find_tokenizer(ckpt: Path, tokenizer_dir=None) -> Path:
    """``tokenizer_dir`` if given, else the checkpoint's (or its training root's) ``tokenizer/`` copy."""
    if tokenizer_dir is not None:
        return Path(tokenizer_dir)
    for cand in (ckpt / TOKENIZER_SUBDIR, ckpt.parent / TOKENIZER_SUBDIR):
        if (cand / "tokenizer.model").is_file():
            return cand
    raise FileNotFoundError(f"no tokenizer given and none in {ckpt / TOKENIZER_SUBDIR}: pass --tokenizer")
