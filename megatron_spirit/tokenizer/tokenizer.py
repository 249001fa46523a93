"""The SpiRit tokenizer as training data and generation use it: text through sentencepiece, markers and units
straight to their ids.

Splitting special tokens out before sentencepiece runs is what keeps a leading ``[Hu30]`` one id (sentencepiece
alone would put a dummy-prefix ``▁`` in front of it) and what makes ``[TEXT]``/``[SPEECH]`` aliases work.
Each text segment is encoded as sentencepiece encodes a standalone text (with its dummy prefix), which is also
what ``transformers``' LlamaTokenizer does with this folder, so ids match between the two for canonical
strings (no space before a marker).
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from .files import SPIRIT_META, TOKENIZER_MODEL
from .vocab import SPECIAL_TOKEN_RE, TEXT_MARKER, SpiritVocab, check_flavor, new_tokens


def fingerprint(path: str | os.PathLike) -> str:
    """What identifies a tokenizer folder's ids: a hash of ``tokenizer.model``'s bytes and of the SpiRit
    metadata (its flavor and sizes). Datasets record it; merging, mixing and training refuse a mismatch."""
    path = Path(path)
    model_file = path / TOKENIZER_MODEL if path.is_dir() else path
    if not model_file.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_MODEL} at {path}")
    h = hashlib.sha256(model_file.read_bytes())
    meta_file = model_file.parent / SPIRIT_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()[:16]


class SpiritTokenizer:
    """Load an extended tokenizer folder (or a bare ``tokenizer.model``)."""

    def __init__(self, path: str | os.PathLike, flavor: str | None = None):
        path = Path(path)
        model_file = path / TOKENIZER_MODEL if path.is_dir() else path
        if not model_file.is_file():
            raise FileNotFoundError(f"no {TOKENIZER_MODEL} at {path}")
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        text_id = self.sp.piece_to_id(TEXT_MARKER)
        if self.sp.id_to_piece(text_id) != TEXT_MARKER:
            raise ValueError(f"{model_file} is not a SpiRit tokenizer (no {TEXT_MARKER} piece): extend it first")
        meta_file = model_file.parent / SPIRIT_META
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        self.vocab = SpiritVocab(base_size=text_id, flavor=check_flavor(flavor or meta.get("flavor", "expressive")))
        if self.sp.get_piece_size() != self.vocab.full_size:
            raise ValueError(
                f"{model_file} has {self.sp.get_piece_size()} pieces, expected {self.vocab.full_size} "
                f"({text_id} base + the SpiRit pieces)"
            )

    @cached_property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of the folder (whatever ``flavor`` this object was opened with)."""
        return fingerprint(self.path)

    # Sizes and special ids -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can produce (every SpiRit piece, whatever the flavor)."""
        return self.vocab.full_size

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def eod_id(self) -> int:
        return self.sp.eos_id()

    @cached_property
    def _special(self) -> dict[str, int]:
        return self.vocab.token_to_id

    # Encoding ---------------------------------------------------------------------------------------------
    def encode_text(self, text: str | Sequence[str], num_threads: int = 1):
        """Plain text (no markers interpreted) through sentencepiece; a list is encoded in one call."""
        return self.sp.encode(text, num_threads=num_threads) if not isinstance(text, str) else self.sp.encode(text)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """A string that may mix text, ``[Text]``/``[Speech]`` markers and unit tokens."""
        ids: list[int] = [self.bos_id] if bos else []
        pos = 0
        for m in SPECIAL_TOKEN_RE.finditer(text):
            if m.start() > pos:
                ids += self._encode_segment(text[pos : m.start()])
            tok = m.group(0)
            token_id = self._special.get(tok)
            if token_id is None:  # a unit number beyond its stream's range: not a SpiRit token, keep as text
                ids += self._encode_segment(tok)
            else:
                ids.append(token_id)
            pos = m.end()
        if pos < len(text):
            ids += self._encode_segment(text[pos:])
        if eos:
            ids.append(self.eos_id)
        return ids

    def _encode_segment(self, segment: str) -> list[int]:
        return self.sp.encode(segment) if segment.strip() else []

    # Decoding ---------------------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_bos_eos: bool = True) -> str:
        """Text runs through sentencepiece, SpiRit ids as their token strings."""
        out: list[str] = []
        run: list[int] = []
        base = self.vocab.base_size
        table = self.vocab.id_to_token
        for i in np.asarray(list(ids), dtype=np.int64).tolist():
            if i < base:
                if skip_bos_eos and i in (self.bos_id, self.eos_id):
                    continue
                run.append(i)
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            if i not in table:
                raise ValueError(f"id {i} is beyond the tokenizer's {self.vocab_size} ids")
            out.append(table[i])
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    # Self-check -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Every marker and unit token must encode to exactly its own id; raises on the first that does not."""
        for offset, tok in enumerate(new_tokens()):
            want = self.vocab.base_size + offset
            if self.sp.piece_to_id(tok) != want:
                raise AssertionError(f"piece {tok} has id {self.sp.piece_to_id(tok)}, expected {want}")
            got = self.encode(tok)
            if got != [want]:
                raise AssertionError(f"{tok} encodes to {got}, expected [{want}]")
