"""Extend a LLaMA-2-style sentencepiece model with the SpiRit pieces and write a Hugging Face tokenizer folder.

The new pieces are USER_DEFINED (sentencepiece matches them inside text; CONTROL pieces it would not), appended
after the base pieces so every base id is unchanged and new ids are ``base size + docs/spec.md §1 offset``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from ..utils.atomic import atomic_dir
from .files import SPIRIT_META, TOKENIZER_MODEL
from .tokenizer import SpiritTokenizer
from .vocab import SpiritVocab, check_flavor, new_tokens


def load_model_proto(path: str | os.PathLike) -> sp_pb2.ModelProto:
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"base sentencepiece model not found: {path}")
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError names nothing useful
        raise ValueError(f"{path} is not a sentencepiece model: {e}") from e
    if not len(proto.pieces):
        raise ValueError(f"{path} is not a sentencepiece model: it has no pieces")
    return proto


def extend_model_proto(proto: sp_pb2.ModelProto, flavor: str = "expressive") -> sp_pb2.ModelProto:
    """Return a copy of ``proto`` with the SpiRit pieces appended."""
    check_flavor(flavor)
    existing = {p.piece: i for i, p in enumerate(proto.pieces)}
    added = new_tokens(flavor)
    clash = [t for t in added if t in existing]
    if clash:
        raise ValueError(
            f"the base model already contains {len(clash)} SpiRit piece(s), e.g. {clash[0]!r} at id "
            f"{existing[clash[0]]}: extend the original LLaMA-2 tokenizer, not an already extended one"
        )
    out = sp_pb2.ModelProto()
    out.CopyFrom(proto)
    for tok in added:
        piece = out.pieces.add()
        piece.piece = tok
        piece.score = 0.0
        piece.type = sp_pb2.ModelProto.SentencePiece.USER_DEFINED
    return out


def hf_tokenizer_config(model_max_length: int = 4096) -> dict:
    """``tokenizer_config.json`` for stock ``transformers``: a LlamaTokenizer, BOS added, EOS not."""
    return {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }


def write_hf_files(out_dir: str | os.PathLike, flavor: str, base_size: int) -> None:
    """The Hugging Face side files next to ``tokenizer.model`` (docs/spec.md §6), plus our own metadata."""
    out_dir = Path(out_dir)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(hf_tokenizer_config(), indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n"
    )
    vocab = SpiritVocab(base_size, flavor)
    meta = {
        "flavor": flavor,
        "base_vocab_size": base_size,
        "tokenizer_size": vocab.full_size,
        "flavor_vocab_size": vocab.size,
        "export_vocab_size": vocab.export_size,
    }
    (out_dir / SPIRIT_META).write_text(json.dumps(meta, indent=2) + "\n")


def build_tokenizer(base_model: str | os.PathLike, out_dir: str | os.PathLike, flavor: str = "expressive") -> Path:
    """Write the extended tokenizer folder atomically and check it; return the folder."""
    check_flavor(flavor)
    proto = load_model_proto(base_model)
    base_size = len(proto.pieces)
    extended = extend_model_proto(proto, flavor)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / TOKENIZER_MODEL).write_bytes(extended.SerializeToString())
        write_hf_files(tmp, flavor, base_size)
        base_path = Path(base_model)
        # Keep the base model's licence/readme if it came as a folder: users redistribute the result.
        if base_path.is_dir():
            for extra in ("LICENSE", "LICENSE.txt", "USE_POLICY.md"):
                if (base_path / extra).is_file():
                    shutil.copy(base_path / extra, tmp / extra)
        SpiritTokenizer(tmp).check()
    return out_dir
