"""Input records → token id sequences of every kind (docs/spec.md §3), a chunk of records at a time.

Kinds: ``text`` ``<s>[Text]…</s>`` · ``speech`` ``<s>[Speech][Hu…]…</s>`` · ``interleaved``
``<s>[Text]the cat[Speech][Hu3]…[Text]the mat</s>`` · ``asr`` ``<s>[Speech]…[Text]…</s>`` · ``tts``
``<s>[Text]…[Speech]…</s>``.

Why chunks: text documents go to sentencepiece in ONE batched ``encode`` call, which is what reaches the
tokenizer's own speed. Speech kinds work on a :class:`~.batch.RecordBatch` (parsed from JSONL, or read from a
pack) with vectorised numpy across all its records — the expressive merge, span sampling, the units-to-spans rule
and the assembly of sequences are a fixed number of array operations per chunk, no Python per record or token —
and aligned text is encoded a distinct word at a time (:mod:`.word_tokens`). Every sequence equals
``SpiritTokenizer.encode`` of its string form. A bad record never becomes a silently wrong sequence: it becomes a
:class:`Reject` with a reason (or an error under ``--strict``, decided by the build).
The text kind and the speech kinds have their own builders (:func:`builder_for`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple

import numpy as np

from ..tokenizer.tokenizer import SpiritTokenizer
from ..tokenizer.units import HUBERT_MERGE_RATE
from ..tokenizer.vocab import HUBERT, PITCH, SPECIAL_TOKEN_RE, STYLE, SpiritVocab, Stream
from .alignments import AlignmentSource
from .batch import RecordBatch, RecordError, RecordParser, Reject, StreamColumn, read_lines
from .interleave import TEXT, SpanConfig, assign_units, clock_shift, record_keys, sample_spans
from .ragged import Ragged, concat_rows, offsets_of, ranges
from .word_tokens import WordTokens

KINDS = ("text", "speech", "interleaved", "asr", "tts")
#: Span-length histograms are kept up to this many words (longer spans land in the last bin).
HIST_BINS = 64


@dataclass(frozen=True)
class SequenceConfig:
    """What to build; frozen so workers get exactly the parent's settings."""

    kind: str
    json_key: str = "text"
    spans: SpanConfig = SpanConfig()
    variants: int = 1
    seed: int = 1234

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")
        if self.variants > 1 and self.kind != "interleaved":
            raise ValueError("--variants applies to --kind interleaved only")


@dataclass
class ChunkResult:
    """Sequences of one chunk per variant (flat ids + lengths), its rejects and counters."""

    ids: list[np.ndarray]
    lengths: list[np.ndarray]
    rejects: list[Reject]
    counts: dict[str, float] = field(default_factory=dict)
    span_hist: np.ndarray | None = None  # [modality, words] counts, interleaved only
    seen_ids: list[str] = field(default_factory=list)
    #: Where each written record (speech kinds) comes from: id, file and line, for the build's duplicate check.
    written: list[tuple[str, str, int]] = field(default_factory=list)


def batch_extent(batch: RecordBatch) -> np.ndarray:
    """Per record, a time (s) beyond every unit's start time and merge key and every word start: what
    :func:`~.interleave.clock_shift` needs to put a batch on one time line."""
    span = batch.duration.copy()
    for stream in (HUBERT, PITCH, STYLE):
        col = batch.streams.get(stream.name)
        if col is not None:  # times use the stream's rate, keys the record's (HuBERT: the merge rate)
            slowest = min(col.rate.min(initial=np.inf), stream.rate, HUBERT_MERGE_RATE)
            span = np.maximum(span, col.frames / slowest)
    if len(batch.word_starts):
        has = batch.words.lengths > 0
        span[has] = np.maximum(span[has], np.maximum.reduceat(batch.word_starts, batch.words.offsets[:-1][has]))
    return span


class UnitStream(NamedTuple):
    """One unit stream of a batch, ready to merge: its column, token ids and merge keys (seconds at the merge
    rate, record-local)."""

    stream: Stream
    column: StreamColumn
    ids: np.ndarray
    keys: np.ndarray


def unit_streams(batch: RecordBatch, vocab: SpiritVocab, dtype) -> list[UnitStream]:
    """The flavor's unit streams in the merge's concatenation order (style, pitch, HuBERT, as the release
    concatenates them)."""
    hu = batch.streams["hubert"]
    parts = [(HUBERT, hu, HUBERT_MERGE_RATE)]
    if vocab.flavor == "expressive":
        parts = [(STYLE, batch.streams["style"], None), (PITCH, batch.streams["pitch"], None)] + parts
    out = []
    for stream, col, merge_rate in parts:
        inv = 1.0 / (col.rate if merge_rate is None else np.full(len(batch), merge_rate))
        scale = inv[0] if len(inv) and np.all(inv == inv[0]) else np.repeat(inv, col.units.lengths)  # one rate
        ids = col.units.values.astype(dtype) + dtype(vocab.stream_offset(stream))
        out.append(UnitStream(stream, col, ids, col.starts * scale))
    return out


def merge(ids: list[np.ndarray], keys: list[np.ndarray]) -> np.ndarray:
    """The expressive merge (:func:`~megatron_spirit.tokenizer.units.merge_runs`) of many records or segments at
    once: ``keys`` already hold each item's clock shift, so one stable sort of the concatenation (style, pitch,
    HuBERT: ties keep that order) orders every item; each stream is sorted, so the sort merges a few runs."""
    if len(ids) == 1:
        return ids[0]
    return np.concatenate(ids)[np.argsort(np.concatenate(keys), kind="stable")]


def token_dtype(vocab_size: int):
    """The ids' dtype, megatron-core's choice: uint16 when the vocabulary fits, else int32."""
    from megatron.core.datasets.indexed_dataset import DType

    return DType.optimal_dtype(vocab_size)


class SequenceBuilder:
    """What the builders of every kind share: the tokenizer and its markers, the ids' dtype, the counters.
    One per process; :func:`builder_for` gives the one a kind needs."""

    def __init__(self, tokenizer_dir: str, cfg: SequenceConfig, flavor: str | None = None, out_dtype=None):
        self.cfg = cfg
        self.tok = SpiritTokenizer(tokenizer_dir, flavor)
        self.vocab = self.tok.vocab
        self.sp = self.tok.sp
        self.out_dtype = token_dtype(self.tok.vocab_size) if out_dtype is None else out_dtype
        self.bos, self.eos = self.tok.bos_id, self.tok.eos_id
        self.text_id, self.speech_id = self.vocab.text_id, self.vocab.speech_id

    def process(self, lines: list[bytes], file: str, first_line: int) -> ChunkResult:
        """Build the sequences of ``lines`` (raw bytes of JSONL lines ``first_line``, ``first_line + 1``, …)."""
        raise NotImplementedError

    def _counts(self, ids: np.ndarray, documents: int, counts: dict) -> dict:
        """Counters of variant 0 (variants differ only in where the spans fall)."""
        special = 2 * documents  # <s> and </s>
        counts["documents"] = float(documents)
        counts["tokens"] = float(len(ids))
        counts["text_tokens"] = float(np.count_nonzero(ids < self.vocab.base_size) - special)
        counts["speech_tokens"] = float(np.count_nonzero(ids >= self.vocab.stream_offset(self.vocab.streams[0])))
        return counts


class TextBuilder(SequenceBuilder):
    """``<s>[Text]document</s>`` per JSONL document: one batched sentencepiece call per chunk."""

    def process(self, lines: list[bytes], file: str, first_line: int) -> ChunkResult:
        key = self.cfg.json_key

        def read(obj: dict, line: int) -> str:
            text = obj.get(key)
            if not isinstance(text, str):
                raise RecordError("missing_text", f"no string field {key!r}", obj.get("id"))
            if not text.strip():
                raise RecordError("empty_text", "the text is empty", obj.get("id"))
            if SPECIAL_TOKEN_RE.search(text):
                raise RecordError("markup_in_text", "text holds a SpiRit marker or unit token", obj.get("id"))
            return text

        rejects: list[Reject] = []
        docs = list(read_lines(lines, file, first_line, read, rejects, parse=json.loads))
        encoded = self.sp.encode([text for _, _, text in docs]) if docs else []
        lens = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        for d in np.flatnonzero(lens == 0).tolist():  # sentencepiece gave nothing: never a bare marker
            line, obj, _ = docs[d]
            rid = obj.get("id")
            rejects.append(Reject(None if rid is None else str(rid), file, line, "empty_text",
                                  "the text encodes to no tokens"))
        rejects.sort(key=lambda r: r.line)
        keep = [e for e in encoded if e]
        body = Ragged(np.fromiter(chain.from_iterable(keep), dtype=np.int64, count=int(lens.sum())),
                      offsets_of(lens[lens > 0]))
        n = len(keep)
        seq = concat_rows([Ragged.constant(n, [self.bos, self.text_id]), body, Ragged.constant(n, [self.eos])],
                          self.out_dtype)
        return ChunkResult([seq.values], [seq.lengths], rejects, self._counts(seq.values, n, {}))


class SpeechBuilder(SequenceBuilder):
    """speech, interleaved, asr and tts sequences of record batches (parsed from JSONL, or read from a pack)."""

    def __init__(self, tokenizer_dir: str, cfg: SequenceConfig, flavor: str | None = None,
                 alignments: str | None = None, out_dtype=None):
        super().__init__(tokenizer_dir, cfg, flavor, out_dtype)
        self.alignments = AlignmentSource(alignments) if alignments else None
        self.parser = RecordParser(alignment=cfg.kind == "interleaved", transcript=cfg.kind in ("asr", "tts"),
                                   alignments=self.alignments)
        self.words = WordTokens(self.sp)
        self._track_ids = (cfg.kind == "interleaved" and self.alignments is not None
                           and self.alignments.table is not None)

    @property
    def _id_dtype(self):
        return np.dtype(self.out_dtype).type

    def process(self, lines: list[bytes], file: str, first_line: int) -> ChunkResult:
        """Also reports the ids seen when an alignment table may hold ids no record has."""
        batch, rejects, seen = self.parser.parse(lines, file, first_line)
        res = self.process_batch(batch, rejects)
        res.seen_ids = seen if self._track_ids else []
        return res

    def process_batch(self, batch: RecordBatch, rejects: list[Reject] | None = None) -> ChunkResult:
        """Build the sequences of a batch of parsed records (``rejects``: those of its parsing, to report)."""
        rejects = list(rejects or [])
        batch, more = self._usable(batch)
        rejects += more
        batch, more, text = self._encodable(batch)
        rejects += more
        rejects.sort(key=lambda r: (r.file, r.line))
        nvar = self.cfg.variants
        hist = np.zeros((2, HIST_BINS), dtype=np.int64) if self.cfg.kind == "interleaved" else None
        counts = {"speech_seconds": float(batch.duration.sum())}
        if len(batch) == 0:  # nothing usable in this chunk (a batch of none may lack the expressive columns)
            empty = [np.zeros(0, self.out_dtype) for _ in range(nvar)]
            return ChunkResult(empty, [np.zeros(0, np.int64)] * nvar, rejects, self._counts(empty[0], 0, counts),
                               hist)
        extent = batch_extent(batch)
        streams = unit_streams(batch, self.vocab, self._id_dtype)
        if self.cfg.kind == "interleaved":
            seqs = []
            for v in range(nvar):
                seq, seg = self._interleaved(batch, extent, streams, v)
                if v == 0:
                    np.add.at(hist, (seg.modality, np.minimum(seg.end - seg.first, HIST_BINS - 1)), 1)
                seqs.append(seq)
        else:
            shift = clock_shift(extent)
            units = merge([s.ids for s in streams], [s.keys + np.repeat(shift, s.column.units.lengths)
                                                     for s in streams])
            per_record = offsets_of(sum(s.column.units.lengths for s in streams))
            seqs = [self._paired(batch, Ragged(units, per_record), text)]
        ids_out = [s.values.astype(self.out_dtype, copy=False) for s in seqs]
        written = list(zip(batch.ids, [batch.sources[k] for k in batch.source.tolist()], batch.line.tolist()))
        return ChunkResult(ids_out, [s.lengths for s in seqs], rejects, self._counts(ids_out[0], len(batch), counts),
                           hist, written=written)

    # Filters -------------------------------------------------------------------------------------------------
    def _usable(self, batch: RecordBatch) -> tuple[RecordBatch, list[Reject]]:
        """Drop (as rejects) records this kind and flavor cannot use."""
        reason = np.full(len(batch), "", dtype=object)
        detail = np.full(len(batch), "", dtype=object)
        hu = batch.streams["hubert"]
        if self.vocab.flavor == "expressive":
            lacks = {name: batch.streams[name].frames < 0 if name in batch.streams else np.ones(len(batch), bool)
                     for name in ("pitch", "style")}
            for i in np.flatnonzero(lacks["pitch"] | lacks["style"]).tolist():
                missing = " and ".join(name for name, lack in lacks.items() if lack[i])
                reason[i], detail[i] = "bad_units", f"record {batch.ids[i]!r}: expressive flavor needs {missing} units"
        for i in np.flatnonzero((hu.units.lengths == 0) & (reason == "")).tolist():
            reason[i], detail[i] = "empty_units", "the record has no units"
        problem = {"interleaved": batch.align_problem, "asr": batch.text_problem, "tts": batch.text_problem}
        if self.cfg.kind in problem:
            for i in np.flatnonzero((problem[self.cfg.kind] > 0) & (reason == "")).tolist():
                reason[i], detail[i] = batch.problem(int(problem[self.cfg.kind][i]))
        bad = np.flatnonzero(reason != "")
        if len(bad) == 0:
            return batch, []
        return (batch.take(np.flatnonzero(reason == "")),
                [batch.reject(i, reason[i], detail[i]) for i in bad.tolist()])

    def _encodable(self, batch: RecordBatch) -> tuple[RecordBatch, list[Reject], Ragged | None]:
        """Drop (as rejects) records with text that sentencepiece turns into nothing (e.g. only control
        characters): a sequence never holds a bare marker. For asr and tts, also the transcripts' ids."""
        kind = self.cfg.kind
        if kind == "speech" or len(batch) == 0:
            return batch, [], None
        text = None
        if kind == "interleaved":
            bad = self._empty_text_segments(batch)
        else:
            text = self.words.encode(batch.lexicon, batch.transcript)
            bad = np.flatnonzero(text.lengths == 0)
        if len(bad) == 0:
            return batch, [], text
        keep = np.setdiff1d(np.arange(len(batch)), bad)
        rejects = [batch.reject(i, "empty_text", "the text encodes to no tokens") for i in bad.tolist()]
        return batch.take(keep), rejects, None if text is None else text.take(keep)

    def _empty_text_segments(self, batch: RecordBatch) -> np.ndarray:
        """Records with a text segment (in any variant) that encodes to nothing. Only a record holding a word that
        encodes to nothing can have one; just those are laid out (a record's layout does not depend on the others
        in its batch)."""
        words = batch.words
        empty_word = self.words.table(batch.lexicon).lengths == 0
        has = np.zeros(len(batch), dtype=bool)
        has[words.row_of_value()[empty_word[words.values[words.offsets[0] : words.offsets[-1]]]]] = True
        suspects = np.flatnonzero(has)
        if len(suspects) == 0:
            return suspects
        sub = batch.take(suspects)
        extent = batch_extent(sub)
        streams = unit_streams(sub, self.vocab, self._id_dtype)
        bad = np.zeros(len(sub), dtype=bool)
        for v in range(self.cfg.variants):
            seg, _, text = self._layout(sub, extent, streams, v)
            bad[seg.record[(seg.modality == TEXT) & (text.lengths == 0)]] = True
        return suspects[bad]

    # Kinds ---------------------------------------------------------------------------------------------------
    def _paired(self, batch: RecordBatch, units: Ragged, text: Ragged | None) -> Ragged:
        """speech, asr and tts sequences (``text``: the transcripts' ids, for asr and tts)."""
        n = len(batch)
        const = Ragged.constant
        if self.cfg.kind == "speech":
            return concat_rows([const(n, [self.bos, self.speech_id]), units, const(n, [self.eos])], self.out_dtype)
        if self.cfg.kind == "asr":
            parts = [const(n, [self.bos, self.speech_id]), units, const(n, [self.text_id]), text, const(n, [self.eos])]
        else:
            parts = [const(n, [self.bos, self.text_id]), text, const(n, [self.speech_id]), units, const(n, [self.eos])]
        return concat_rows(parts, self.out_dtype)

    def _layout(self, batch: RecordBatch, extent: np.ndarray, streams: list[UnitStream], variant: int):
        """One variant's segments, the segment each unit is emitted in (per stream), and the text segments' ids."""
        spans = sample_spans(batch.words.lengths, record_keys(self.cfg.seed, variant, batch.ids), self.cfg.spans)
        shift = clock_shift(extent)
        times = [s.column.starts * (1.0 / s.stream.rate) + np.repeat(shift, s.column.units.lengths) for s in streams]
        seg, seg_of_units = assign_units(batch.words, batch.word_starts, shift, times, spans)
        n_words = np.where(seg.modality == TEXT, seg.end - seg.first, 0)
        seg_words = Ragged(batch.words.values[ranges(batch.words.offsets[seg.record] + seg.first, n_words)],
                           offsets_of(n_words))
        return seg, seg_of_units, self.words.encode(batch.lexicon, seg_words)

    def _interleaved(self, batch: RecordBatch, extent: np.ndarray, streams: list[UnitStream], variant: int):
        """One variant's interleaved sequences, and its segments (for the span histogram)."""
        seg, seg_of_units, text = self._layout(batch, extent, streams, variant)
        is_text = seg.modality == TEXT
        if np.any(is_text & (text.lengths == 0)):  # _encodable dropped every record that could have one
            raise RuntimeError("internal: a text segment encodes to no tokens")
        # Only the units that speech segments emit are merged, each segment on its own clock (so a segment's
        # units stay together and keep the merge's order).
        seg_shift = clock_shift(extent[seg.record])
        keep = [so >= 0 for so in seg_of_units]
        emitted = merge([s.ids[k] for s, k in zip(streams, keep)],
                        [s.keys[k] + seg_shift[so[k]] for s, so, k in zip(streams, seg_of_units, keep)])
        speech = Ragged(emitted, offsets_of(seg.units))
        marker = Ragged(np.where(is_text, self.text_id, self.speech_id), np.arange(len(is_text) + 1))
        body = concat_rows([marker, text, speech], self.out_dtype).group(seg.per_record)
        n = len(batch)
        seq = concat_rows([Ragged.constant(n, [self.bos]), body, Ragged.constant(n, [self.eos])], self.out_dtype)
        return seq, seg


def builder_for(tokenizer_dir: str, cfg: SequenceConfig, flavor: str | None = None, alignments: str | None = None,
                out_dtype=None) -> TextBuilder | SpeechBuilder:
    """The builder of ``cfg.kind``'s sequences."""
    if cfg.kind == "text":
        return TextBuilder(tokenizer_dir, cfg, flavor, out_dtype)
    return SpeechBuilder(tokenizer_dir, cfg, flavor, alignments, out_dtype)
