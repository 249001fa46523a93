"""Word-level speech–text interleaving (SPEC §3): span sampling and the rule that gives each span its units.

Spans alternate modality; text spans hold ``text_min..text_max`` words and speech spans ``speech_min..speech_max``
words (uniform, inclusive); the first modality is a fair coin. The last span is cut at the utterance's end.

Units to spans — the rule, exact and vectorised: the boundary between word ``i-1`` and word ``i`` is the start
time of word ``i``. A unit (a deduplicated run, timed at its first frame, as :class:`MergedUnits` gives it) belongs
to the word whose ``[start_i, start_{i+1})`` holds its time; the first word also owns anything before it, the last
anything after it. So a word owns its frames plus the pause that follows it, every unit belongs to exactly one
word and hence one span, and a speech span emits exactly the units of its words: nothing is duplicated or lost at
a switch (the units of text spans are replaced by their words).

Randomness is one ``numpy`` generator per (seed, variant, utterance id), so the output does not depend on how
the corpus is sharded or how many workers build it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..tokenizer.units import MergedUnits

TEXT, SPEECH = 0, 1


@dataclass(frozen=True)
class SpanConfig:
    """Span lengths in words, inclusive bounds (SPEC §3 defaults)."""

    text_min: int = 10
    text_max: int = 30
    speech_min: int = 5
    speech_max: int = 15

    def __post_init__(self):
        for lo, hi, name in ((self.text_min, self.text_max, "text"), (self.speech_min, self.speech_max, "speech")):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} span lengths must satisfy 1 <= min <= max, got {lo}..{hi}")


def record_rng(seed: int, variant: int, record_id: str) -> np.random.Generator:
    """The generator of one utterance in one variant: independent of sharding and worker count."""
    key = ((seed & 0xFFFFFFFF) << 64) | ((variant & 0xFFFFFFFF) << 32) | zlib.crc32(record_id.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(key))


def sample_spans(n_words: int, rng: np.random.Generator, cfg: SpanConfig = SpanConfig()) -> list[tuple[int, int, int]]:
    """``(modality, first word, end word)`` spans covering ``range(n_words)``, alternating modality.

    Lengths are drawn up front, one vector per modality (enough for any utterance of ``n_words``), so a record
    costs three generator calls whatever its length.
    """
    modality = int(rng.integers(2))
    most = n_words // min(cfg.text_min, cfg.speech_min) + 2
    lengths = {
        TEXT: rng.integers(cfg.text_min, cfg.text_max + 1, size=most).tolist(),
        SPEECH: rng.integers(cfg.speech_min, cfg.speech_max + 1, size=most).tolist(),
    }
    spans = []
    pos, k = 0, [0, 0]
    while pos < n_words:
        end = min(n_words, pos + lengths[modality][k[modality]])
        k[modality] += 1
        spans.append((modality, pos, end))
        pos, modality = end, 1 - modality
    return spans


def unit_bounds(word_starts: np.ndarray, unit_times: np.ndarray, spans: list[tuple[int, int, int]]):
    """Order of units grouped by span, and each span's ``[lo, hi)`` in that order (the rule in the module doc)."""
    word_of_unit = np.searchsorted(word_starts[1:], unit_times, side="right")
    span_end_words = np.array([end for _, _, end in spans], dtype=np.int64)
    span_of_word = np.searchsorted(span_end_words, np.arange(len(word_starts)), side="right")
    span_of_unit = span_of_word[word_of_unit]
    order = np.argsort(span_of_unit, kind="stable")  # units are already in time order within a span
    bounds = np.searchsorted(span_of_unit[order], np.arange(len(spans) + 1), side="left")
    return order, bounds


@dataclass(frozen=True)
class InterleavedPlan:
    """One interleaved sequence before tokenisation: spans with their text or their unit ids."""

    spans: list[tuple[int, int, int]]
    texts: list[str]  # per span; "" for speech spans
    unit_ids: list[np.ndarray]  # per span; empty for text spans


def interleave(
    words: tuple[str, ...] | list[str],
    word_starts: np.ndarray,
    units: MergedUnits,
    ids: np.ndarray,
    rng: np.random.Generator,
    cfg: SpanConfig = SpanConfig(),
) -> InterleavedPlan:
    """Cut one aligned utterance into alternating spans; ``ids`` are ``units``' token ids (same order)."""
    spans = sample_spans(len(words), rng, cfg)
    order, bounds = unit_bounds(np.asarray(word_starts, dtype=np.float64), units.time, spans)
    segments: list[list] = []  # [modality, first word, end word, ids]
    for k, (modality, a, b) in enumerate(spans):
        seg_ids = ids[order[bounds[k] : bounds[k + 1]]] if modality == SPEECH else ids[:0]
        if modality == SPEECH and len(seg_ids) == 0:
            modality = TEXT  # words that own no unit at all (rare): keep them as text, never an empty [Speech]
        if segments and segments[-1][0] == TEXT and modality == TEXT:
            segments[-1][2] = b
        else:
            segments.append([modality, a, b, seg_ids])
    return InterleavedPlan(
        [(m, a, b) for m, a, b, _ in segments],
        [" ".join(words[a:b]) if m == TEXT else "" for m, a, b, _ in segments],
        [i for _, _, _, i in segments],
    )
