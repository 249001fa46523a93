"""The SpiRit tokenizer as training data and generation use it: text through sentencepiece, markers and units
straight to their ids.

Splitting special tokens out before sentencepiece runs is what keeps a leading ``[Hu30]`` one id (sentencepiece
alone would put a dummy-prefix ``▁`` in front of it) and what makes ``[TEXT]``/``[SPEECH]`` aliases work.
Each text segment is encoded as sentencepiece encodes a standalone text (with its dummy prefix), which is also
what the folder's ``tokenizer.json`` (``hf_files``) makes ``transformers.AutoTokenizer`` do, so ids and decoded
strings match between the two for canonical strings (no space next to a marker or unit).
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
from .vocab import (FLAVORS, SPECIAL_TOKEN_RE, STREAM_BY_PREFIX, TEXT_MARKER, SpiritVocab, check_flavor,
                    new_tokens)


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


def layout_flavor(pieces: Sequence[str], base_size: int) -> str:
    """The flavor whose layout (docs/spec.md §1) a model's pieces after ``base_size`` follow: EXPRESSIVE when
    ``[Pi0]`` sits at its SPEC id, else BASE. Whether the layout is then right is :func:`layout_problem`'s call."""
    first_pitch = base_size + len(new_tokens("base"))
    return "expressive" if len(pieces) > first_pitch and pieces[first_pitch] == "[Pi0]" else "base"


def layout_problem(pieces: Sequence[str], base_size: int, flavor: str) -> str | None:
    """Where ``pieces`` (a whole model's, in id order) depart from the flavor's layout: None, or the first bad
    piece and what SPEC puts there."""
    want = SpiritVocab(base_size, flavor).pieces()
    have = list(pieces[base_size:])
    for offset, (got, expected) in enumerate(zip(have, want)):
        if got != expected:
            return f"piece {got!r} at id {base_size + offset}, where the {flavor.upper()} layout has {expected!r}"
    if len(have) != len(want):
        return (f"{base_size + len(have)} pieces, where the {flavor.upper()} layout has {base_size + len(want)} "
                f"({base_size} base + {len(want)})")
    return None


class SpiritTokenizer:
    """Load an extended tokenizer folder (or a bare ``tokenizer.model``).

    The folder's own flavor comes from its pieces (a BASE tokenizer holds no pitch or style pieces). ``flavor``
    may narrow an EXPRESSIVE tokenizer to BASE (sequences then use HuBERT only); it cannot widen a BASE one.
    """

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
        pieces = [self.sp.id_to_piece(i) for i in range(text_id, self.sp.get_piece_size())]
        built = layout_flavor([""] * text_id + pieces, text_id)
        problem = layout_problem([""] * text_id + pieces, text_id, built)
        if problem is not None:
            raise ValueError(
                f"{model_file} does not hold the SpiRit layout (docs/spec.md §1): {problem}; rebuild it with "
                f"spirit-make-tokenizer --base-model {path}"
            )
        self.flavor = built
        if flavor is not None and FLAVORS.index(check_flavor(flavor)) > FLAVORS.index(built):
            raise ValueError(f"{model_file} is a {built.upper()} tokenizer (no pitch or style pieces): it cannot be "
                             f"used as {flavor.upper()}")
        self.vocab = SpiritVocab(base_size=text_id, flavor=flavor or built)
        self._layout = SpiritVocab(base_size=text_id, flavor=built)

    @cached_property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of the folder (whatever ``flavor`` this object was opened with)."""
        return fingerprint(self.path)

    # Sizes and special ids -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Ids of the tokenizer (its pieces, fillers included): the exported embedding's rows."""
        return self._layout.full_size

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
            if token_id is None:
                self._check_flavor_holds(tok)
                # a unit number beyond its stream's range: not a SpiRit token, keep as text
                ids += self._encode_segment(tok)
            else:
                ids.append(token_id)
            pos = m.end()
        if pos < len(text):
            ids += self._encode_segment(text[pos:])
        if eos:
            ids.append(self.eos_id)
        return ids

    def _check_flavor_holds(self, tok: str) -> None:
        stream = STREAM_BY_PREFIX.get(tok[1:3])
        if stream is not None and stream not in self.vocab.streams and int(tok[3:-1]) < stream.count:
            raise ValueError(f"{tok} is a {stream.name} unit, which a {self.vocab.flavor.upper()} tokenizer does not "
                             f"hold ({self.path}): use an EXPRESSIVE tokenizer")

    def _encode_segment(self, segment: str) -> list[int]:
        return self.sp.encode(segment) if segment.strip() else []

    # Decoding ---------------------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_bos_eos: bool = True) -> str:
        """Text runs through sentencepiece, SpiRit ids as their token strings."""
        out: list[str] = []
        run: list[int] = []
        base = self.vocab.base_size
        table = self._layout.id_to_token
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
        """Every marker and unit token must encode to exactly its own id, and no filler may come out of encoding
        its own name; raises on the first that does not."""
        base = self.vocab.base_size
        for offset, tok in enumerate(self._layout.pieces()):
            want = base + offset
            if self.sp.piece_to_id(tok) != want:
                raise AssertionError(f"piece {tok} has id {self.sp.piece_to_id(tok)}, expected {want}")
            got = self.encode(tok) if tok in self._layout.token_to_id else self.sp.encode(tok)
            if tok in self._layout.token_to_id and got != [want]:
                raise AssertionError(f"{tok} encodes to {got}, expected [{want}]")
            if tok not in self._layout.token_to_id and want in got:
                raise AssertionError(f"filler {tok} is produced by encoding text")
