"""Text of aligned speech → BPE ids, one sentencepiece call per distinct word.

Aligned text is normalised words joined by single spaces. A sentencepiece model that splits on white space
(``split_by_whitespace``, as BPE and unigram models are trained by default, LLaMA-2's included) never makes a
piece across a space, and ``add_dummy_prefix`` gives every word the same ``▁`` it has after a space: the ids of
``"w1 w2 …"`` are the ids of ``"w1"``, then of ``"w2"``, …. So each distinct word is encoded once and a span is a
vectorised gather — what makes interleaved builds as fast as speech-only ones. Models that do not split on white
space take the plain path: one batched ``encode`` of the joined strings. Either way the ids equal
``SpiritTokenizer.encode`` of the span's text (tested).
"""
from __future__ import annotations

import numpy as np

from .ragged import Ragged, offsets_of

#: The word cache is dropped when it holds this many words (memory stays bounded on any corpus).
MAX_CACHED_WORDS = 2_000_000


def splits_on_whitespace(sp) -> bool:
    """Whether ``sp``'s ids for ``"a b"`` are always those of ``"a"`` followed by those of ``"b"``."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(sp.serialized_model_proto())
    except Exception:  # no protobuf, or a proto we cannot read: take the plain path
        return False
    t, n = m.trainer_spec, m.normalizer_spec
    return (t.model_type in (t.BPE, t.UNIGRAM) and t.split_by_whitespace and not t.treat_whitespace_as_suffix
            and n.add_dummy_prefix)


class WordTokens:
    """Encodes rows of lexicon word ids (``" ".join`` of each row's words) to token ids."""

    def __init__(self, sp, word_level: bool | None = None):
        self.sp = sp
        self.word_level = splits_on_whitespace(sp) if word_level is None else word_level
        self._cache: dict[str, list[int]] = {}
        self._table: tuple[list[str] | None, Ragged | None] = (None, None)

    def table(self, lexicon: list[str]) -> Ragged:
        """Token ids of every lexicon word (computed once per lexicon object)."""
        if self._table[0] is lexicon:
            return self._table[1]
        if len(self._cache) > MAX_CACHED_WORDS:
            self._cache.clear()
        missing = [w for w in lexicon if w not in self._cache]
        if missing:
            self._cache.update(zip(missing, self.sp.encode(missing)))
        cache = self._cache
        lengths = np.fromiter((len(cache[w]) for w in lexicon), dtype=np.int64, count=len(lexicon))
        values = np.fromiter((i for w in lexicon for i in cache[w]), dtype=np.int64, count=int(lengths.sum()))
        table = Ragged(values, offsets_of(lengths))
        self._table = (lexicon, table)
        return table

    def encode(self, lexicon: list[str], rows: Ragged) -> Ragged:
        """Ids of each row's text (its words joined by spaces); an empty row gives no ids."""
        if self.word_level:
            per_word = self.table(lexicon).take(rows.values[rows.offsets[0] : rows.offsets[-1]])
            return per_word.group(rows.offsets - rows.offsets[0])
        texts = [" ".join(lexicon[i] for i in rows.row(r).tolist()) for r in range(len(rows))]
        non_empty = [t for t in texts if t]
        encoded = iter(self.sp.encode(non_empty) if non_empty else [])
        return Ragged.from_arrays([np.asarray(next(encoded), dtype=np.int64) if t else np.zeros(0, np.int64)
                                   for t in texts])
