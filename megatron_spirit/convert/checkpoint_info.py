"""``spirit_checkpoint.json``: what a Megatron checkpoint folder holds, beside megatron-core's own files.

megatron-core's checkpoint stores tensors, not the model's hyper-parameters (head counts cannot be read back
from shapes), nor the tokenizer. The converter writes this file (and a ``tokenizer/`` copy) next to the
checkpoint; ``megatron-to-hf`` reads it. The trainer can call :func:`write_info` when it saves so that its
checkpoints export without extra arguments.
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


def read_info(ckpt_dir: str | os.PathLike) -> Optional[dict]:
    path = Path(ckpt_dir) / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def model_config_from_info(info: dict):
    from ..model.config import ModelConfig

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in info["model_config"].items() if k in fields})
