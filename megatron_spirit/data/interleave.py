"""Word-level speech–text interleaving (docs/spec.md §3): span sampling and the rule that gives each span its units,
both vectorised over a batch of utterances.

Spans alternate modality; text spans hold ``text_min..text_max`` words and speech spans ``speech_min..speech_max``
words (uniform, inclusive); the first modality is a fair coin. The last span is cut at the utterance's end.

Units to spans — the rule, exact: the boundary between word ``i-1`` and word ``i`` is the start time of word
``i``. A unit (a deduplicated run, timed at its first frame) belongs to the word whose ``[start_i, start_{i+1})``
holds its time; the first word also owns anything before it, the last anything after it. So a word owns its
frames plus the pause that follows it, every unit belongs to exactly one word and hence one span, and a speech
span emits exactly the units of its words: nothing is duplicated or lost at a switch (the units of text spans
are replaced by their words). A speech span whose words own no unit at all (rare) stays text, and neighbouring
text spans join into one, so a sequence never holds an empty ``[Speech]`` or two ``[Text]`` in a row.

Randomness is counter-based: draw ``j`` of an utterance is a hash of (seed, variant, utterance id, ``j``), so the
output does not depend on how the corpus is sharded or how many workers build it, and a whole batch is drawn at
once.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .ragged import Ragged, offsets_of

TEXT, SPEECH = 0, 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class SpanConfig:
    """Span lengths in words, inclusive bounds (docs/spec.md §3 defaults)."""

    text_min: int = 10
    text_max: int = 30
    speech_min: int = 5
    speech_max: int = 15

    def __post_init__(self):
        for lo, hi, name in ((self.text_min, self.text_max, "text"), (self.speech_min, self.speech_max, "speech")):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} span lengths must satisfy 1 <= min <= max, got {lo}..{hi}")


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective 64-bit hash, on arrays (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def record_keys(seed: int, variant: int, ids: list[str]) -> np.ndarray:
    """One 64-bit key per utterance for (seed, variant): what its spans are drawn from."""
    base = _mix(np.array([((seed & 0xFFFFFFFF) << 32) | (variant & 0xFFFFFFFF)], dtype=np.uint64))
    crc = np.fromiter((zlib.crc32(i.encode("utf-8")) for i in ids), dtype=np.uint64, count=len(ids))
    return _mix(base ^ _mix(crc))


@dataclass
class Spans:
    """Spans of a batch, in order: utterance, modality, first word and end word (utterance-local)."""

    record: np.ndarray
    modality: np.ndarray
    first: np.ndarray
    end: np.ndarray


def sample_spans(n_words: np.ndarray, keys: np.ndarray, cfg: SpanConfig = SpanConfig()) -> Spans:
    """Alternating spans covering ``range(n_words[r])`` for each utterance ``r`` (every ``n_words`` >= 1)."""
    n_words = np.asarray(n_words, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.uint64)
    draws = n_words // min(cfg.text_min, cfg.speech_min) + 1  # enough spans for any draw
    rec = np.repeat(np.arange(len(n_words), dtype=np.int64), draws)
    j = np.arange(len(rec), dtype=np.int64) - np.repeat(offsets_of(draws)[:-1], draws)
    first = (_mix(keys ^ _GOLDEN) & np.uint64(1)).astype(np.int64)
    modality = first[rec] ^ (j & 1)
    lo = np.where(modality == TEXT, cfg.text_min, cfg.speech_min)
    width = np.where(modality == TEXT, cfg.text_max - cfg.text_min + 1, cfg.speech_max - cfg.speech_min + 1)
    with np.errstate(over="ignore"):
        h = _mix(keys[rec] + (j.astype(np.uint64) + np.uint64(1)) * _GOLDEN)
    length = lo + (h % width.astype(np.uint64)).astype(np.int64)
    end = np.cumsum(length)
    end -= np.repeat(end[offsets_of(draws)[:-1]] - length[offsets_of(draws)[:-1]], draws)  # per-utterance cumsum
    start = end - length
    keep = start < n_words[rec]
    end = np.minimum(end, n_words[rec])
    rec, modality, start, end = rec[keep], modality[keep], start[keep], end[keep]
    return Spans(rec, modality, start, end)


@dataclass
class Segments:
    """The interleaved layout of a batch: segments (merged spans) in order, each text or speech.

    ``first``/``end``: words of the segment (utterance-local); ``units``: how many units a speech segment emits
    (0 for text); ``per_record``: offsets of each utterance's segments.
    """

    record: np.ndarray
    modality: np.ndarray
    first: np.ndarray
    end: np.ndarray
    units: np.ndarray
    per_record: np.ndarray


def clock_shift(span_s: np.ndarray) -> np.ndarray:
    """Per utterance (or segment), the offset that puts the batch on one time line: item ``r``'s times (all in
    ``[0, span_s[r])``) move past every earlier item's, so one ``searchsorted`` or sort serves the whole batch."""
    shift = np.zeros(len(span_s))
    shift[1:] = np.cumsum(np.asarray(span_s, dtype=np.float64) + 1.0)[:-1]
    return shift


def assign_units(words: Ragged, word_starts: np.ndarray, shift: np.ndarray, unit_times: list[np.ndarray],
                 spans: Spans) -> tuple[Segments, list[np.ndarray]]:
    """Apply the rule of the module doc to a batch: which units each span emits; then drop empty speech spans and
    join neighbouring text spans.

    ``unit_times``: per unit stream, each unit's start time on the batch clock (utterance ``r``'s times moved by
    ``shift[r]``, :func:`clock_shift`), in time order within each utterance. Each utterance must have at least one
    word. Returns the segments and, per stream, the segment each unit is emitted in (-1: in a text segment).
    """
    # A span starts at its first word's start; an utterance's first span at -inf (just before its clock).
    start = word_starts[words.offsets[spans.record] + spans.first] + shift[spans.record]
    opening = spans.first == 0
    start[opening] = shift[spans.record[opening]] - 0.5
    # Each stream is in time order: its units per span are one searchsorted of the span starts.
    counts = [np.diff(np.append(np.searchsorted(t, start, side="left"), len(t))) for t in unit_times]
    count = np.sum(counts, axis=0) if counts else np.zeros(len(start), dtype=np.int64)
    modality = np.where((spans.modality == SPEECH) & (count == 0), TEXT, spans.modality)
    # Segments: a speech span alone; runs of text spans of one utterance joined.
    opens = np.ones(len(modality), dtype=bool)
    opens[1:] = (modality[1:] == SPEECH) | (modality[:-1] == SPEECH) | (spans.record[1:] != spans.record[:-1])
    seg_first = np.flatnonzero(opens)
    seg_last = np.append(seg_first[1:], len(modality))[: len(seg_first)] - 1
    seg_mod = modality[seg_first]
    seg_rec = spans.record[seg_first]
    segment_of_span = np.where(modality == SPEECH, np.cumsum(opens) - 1, -1)
    segments_of_units = [np.repeat(segment_of_span, c) for c in counts]
    return (Segments(seg_rec, seg_mod, spans.first[seg_first], spans.end[seg_last],
                     np.where(seg_mod == SPEECH, count[seg_first], 0),
                     offsets_of(np.bincount(seg_rec, minlength=len(words)))),
            segments_of_units)
