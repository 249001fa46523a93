"""Train a small LLaMA-style sentencepiece BPE model: the stand-in for LLaMA-2's tokenizer in demos and tests.

Real runs extend the real LLaMA-2 ``tokenizer.model``; this exists because it cannot be downloaded everywhere.
Settings mirror LLaMA-2's (BPE, byte fallback, digits split, ``<unk>``/``<s>``/``</s>`` = 0/1/2, no pad).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from ..utils.atomic import write_bytes


def train_sentencepiece(
    sentences: Iterable[str], out_model: str | os.PathLike, vocab_size: int = 1000, pad_to: int | None = None
) -> Path:
    """Train on ``sentences``; with ``pad_to``, append UNUSED filler pieces up to that size (never emitted)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        hard_vocab_limit=False,  # small corpora: vocab_size is an upper bound
        minloglevel=2,
    )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    if pad_to is not None:
        if pad_to < len(proto.pieces):
            raise ValueError(f"pad_to={pad_to} is below the trained size {len(proto.pieces)}")
        for i in range(len(proto.pieces), pad_to):
            piece = proto.pieces.add()
            piece.piece = f"<unused{i}>"
            piece.score = -1e9
            piece.type = sp_pb2.ModelProto.SentencePiece.UNUSED
    out_model = Path(out_model)
    write_bytes(out_model, proto.SerializeToString())
    return out_model
