"""Input records → token id sequences of every kind (SPEC §3), a chunk of records at a time.

Kinds: ``text`` ``<s>[Text]…</s>`` · ``speech`` ``<s>[Speech][Hu…]…</s>`` · ``interleaved``
``<s>[Text]the cat[Speech][Hu3]…[Text]the mat</s>`` · ``asr`` ``<s>[Speech]…[Text]…</s>`` · ``tts``
``<s>[Text]…[Speech]…</s>``.

Why chunks: all text of a chunk (documents, spans, transcripts) goes to sentencepiece in ONE batched ``encode``
call, which is what reaches the tokenizer's own speed; unit ids come from vectorised numpy (no per-token Python);
each text segment is encoded as a standalone text, exactly as :meth:`SpiritTokenizer.encode` does, so a sequence
equals ``SpiritTokenizer.encode`` of its string form. A bad record never becomes a silently wrong sequence: it
becomes a :class:`Reject` with a reason (or an error under ``--strict``, decided by the writer).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from ..speech.manifest import UnitsRecord
from ..tokenizer.tokenizer import SpiritTokenizer
from ..tokenizer.vocab import SPECIAL_TOKEN_RE
from .alignments import Alignment, AlignmentError, AlignmentSource, check_alignment, normalize_text, parse_word_list
from .jsonl import loads
from .interleave import TEXT, SpanConfig, interleave, record_rng

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
class Reject:
    id: str | None
    file: str
    line: int
    reason: str
    detail: str

    def to_json(self) -> dict:
        return {"id": self.id, "file": self.file, "line": self.line, "reason": self.reason, "detail": self.detail}


class RecordError(ValueError):
    def __init__(self, reason: str, detail: str, rid: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.rid = reason, detail, rid


@dataclass
class ChunkResult:
    """Sequences of one chunk per variant (flat ids + lengths), its rejects and counters."""

    ids: list[np.ndarray]
    lengths: list[np.ndarray]
    rejects: list[Reject]
    counts: dict[str, float] = field(default_factory=dict)
    span_hist: np.ndarray | None = None  # [modality, words] counts, interleaved only
    seen_ids: list[str] = field(default_factory=list)


def units_record(obj: dict[str, Any], where: str) -> UnitsRecord:
    """A units-manifest record; also any JSONL whose ``units`` is a plain list/string of frame-level HuBERT units
    (25 Hz) or a dict of plain per-frame lists per stream."""
    units = obj.get("units")
    if units is None:
        raise RecordError("missing_units", "the record has no 'units'", obj.get("id"))
    if isinstance(units, str):
        units = [int(u) for u in units.split()]
    if isinstance(units, (list, np.ndarray)):
        obj = dict(obj, units={"hubert": {"rate": 25.0, "units": units}})
    elif isinstance(units, dict) and any(isinstance(v, (list, str, np.ndarray)) for v in units.values()):
        from ..tokenizer.vocab import STREAMS

        rates = {s.name: s.rate for s in STREAMS}
        obj = dict(obj, units={
            k: ({"rate": rates.get(k, 0.0), "units": [int(u) for u in v.split()] if isinstance(v, str) else v}
                if isinstance(v, (list, str, np.ndarray)) else v)
            for k, v in units.items()
        })
    try:
        return UnitsRecord.from_json(obj, where=where)
    except ValueError as e:
        reason = "unit_out_of_range" if "out of range" in str(e) else "bad_units"
        raise RecordError(reason, str(e), obj.get("id")) from e


class SequenceBuilder:
    """Turns chunks of raw JSONL lines into token id sequences. One per process (it holds the tokenizer)."""

    def __init__(self, tokenizer_dir: str, cfg: SequenceConfig, flavor: str | None = None,
                 alignments: str | None = None, out_dtype=np.int32):
        self.cfg = cfg
        self.tok = SpiritTokenizer(tokenizer_dir, flavor)
        self.vocab = self.tok.vocab
        self.sp = self.tok.sp
        self.out_dtype = out_dtype
        self.alignments = AlignmentSource(alignments) if alignments else None
        self._track_ids = cfg.kind == "interleaved" and self.alignments is not None and self.alignments.table is not None
        v = self.vocab
        self.bos = np.array([self.tok.bos_id], dtype=np.int64)
        self.eos = np.array([self.tok.eos_id], dtype=np.int64)
        self.bos_text = np.array([self.tok.bos_id, v.text_id], dtype=np.int64)
        self.bos_speech = np.array([self.tok.bos_id, v.speech_id], dtype=np.int64)
        self.text_marker = np.array([v.text_id], dtype=np.int64)
        self.speech_marker = np.array([v.speech_id], dtype=np.int64)

    # Records -> pieces -----------------------------------------------------------------------------------
    def _speech(self, obj: dict, where: str) -> tuple[UnitsRecord, np.ndarray, Any]:
        rec = units_record(obj, where)
        try:
            merged = rec.merged(self.vocab.flavor)
        except ValueError as e:
            raise RecordError("bad_units", str(e), rec.id) from e
        ids = merged.ids(self.vocab)
        if len(ids) == 0:
            raise RecordError("empty_units", "the record has no units", rec.id)
        if ids.max() >= self.vocab.size or ids.min() < self.vocab.stream_offset(self.vocab.streams[0]):
            raise RecordError("unit_out_of_range", f"unit ids outside the {self.vocab.flavor} vocabulary", rec.id)
        return rec, ids, merged

    @staticmethod
    def _duration(rec: UnitsRecord) -> float:
        hu = rec.streams["hubert"]
        return rec.duration if rec.duration > 0 else hu.frames / hu.rate

    def _transcript(self, obj: dict, rid: str) -> str:
        """The normalised transcript: ``text``, else the words of an inline alignment."""
        text = obj.get("text")
        words = normalize_text(text) if isinstance(text, str) else []
        if not isinstance(text, str) and obj.get("words", obj.get("alignment")) is not None:
            try:
                words = list(parse_word_list(obj.get("words", obj.get("alignment")), f"record {rid!r}").words)
            except AlignmentError as e:
                raise RecordError(e.reason, str(e).split(": ", 1)[-1], rid) from e
        if not words:
            raise RecordError("empty_text", "no transcript 'text' (or only punctuation)", rid)
        return " ".join(words)

    def _alignment(self, rec: UnitsRecord, obj: dict) -> Alignment:
        inline = obj.get("words", obj.get("alignment"))
        try:
            if inline is not None:
                al = parse_word_list(inline, f"record {rec.id!r}")
            else:
                al = self.alignments.get(rec.id) if self.alignments is not None else None
                if al is None:
                    raise RecordError("missing_alignment", "no word alignment for this record", rec.id)
            text = obj.get("text")
            check_alignment(al, self._duration(rec), text if isinstance(text, str) else None)
        except AlignmentError as e:
            raise RecordError(e.reason, str(e).split(": ", 1)[-1], rec.id) from e
        return al

    def _pieces(self, obj: dict, where: str, texts: list[str], counts: dict, hist: np.ndarray | None):
        """Pieces of one record per variant: arrays of ids, or ints indexing ``texts`` (encoded later)."""
        kind = self.cfg.kind
        if kind == "text":
            text = obj.get(self.cfg.json_key)
            if not isinstance(text, str):
                raise RecordError("missing_text", f"no string field {self.cfg.json_key!r}", obj.get("id"))
            if not text.strip():
                raise RecordError("empty_text", "the text is empty", obj.get("id"))
            if SPECIAL_TOKEN_RE.search(text):
                raise RecordError("markup_in_text", "text holds a SpiRit marker or unit token", obj.get("id"))
            texts.append(text)
            return [[self.bos_text, len(texts) - 1, self.eos]]
        rec, ids, merged = self._speech(obj, where)
        counts["speech_seconds"] = counts.get("speech_seconds", 0.0) + self._duration(rec)
        if kind == "speech":
            return [[self.bos_speech, ids, self.eos]]
        if kind in ("asr", "tts"):
            texts.append(self._transcript(obj, rec.id))
            k = len(texts) - 1
            if kind == "asr":
                return [[self.bos_speech, ids, self.text_marker, k, self.eos]]
            return [[self.bos_text, k, self.speech_marker, ids, self.eos]]
        al = self._alignment(rec, obj)
        out = []
        for variant in range(self.cfg.variants):
            plan = interleave(al.words, al.starts, merged, ids, record_rng(self.cfg.seed, variant, rec.id),
                              self.cfg.spans)
            pieces: list = [self.bos]
            for (modality, a, b), text, unit_ids in zip(plan.spans, plan.texts, plan.unit_ids):
                if modality == TEXT:
                    texts.append(text)
                    pieces += [self.text_marker, len(texts) - 1]
                else:
                    pieces += [self.speech_marker, unit_ids]
                if hist is not None and variant == 0:
                    hist[modality, min(b - a, HIST_BINS - 1)] += 1
            pieces.append(self.eos)
            out.append(pieces)
        return out

    # Chunks ------------------------------------------------------------------------------------------------
    def process(self, lines: list[bytes], file: str, first_line: int, encode_threads: int = 1) -> ChunkResult:
        """Build the sequences of ``lines`` (raw bytes of JSONL lines ``first_line``, ``first_line + 1``, …)."""
        nvar = self.cfg.variants
        rejects: list[Reject] = []
        texts: list[str] = []
        docs: list[list[list]] = [[] for _ in range(nvar)]
        counts: dict[str, float] = {}
        hist = np.zeros((2, HIST_BINS), dtype=np.int64) if self.cfg.kind == "interleaved" else None
        seen: list[str] = []
        owner: list[int] = []  # per text: the document (index in docs[0]) it belongs to
        doc_where: list[tuple[int, Any]] = []  # per document: line and record id
        for k, raw in enumerate(lines):
            line = first_line + k
            obj = None
            try:
                try:
                    s = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RecordError("invalid_utf8", f"byte {e.start}: {e.reason}") from e
                if not s.strip():
                    continue
                try:
                    obj = json.loads(s) if self.cfg.kind == "text" else loads(s)
                except json.JSONDecodeError as e:
                    raise RecordError("invalid_json", str(e)) from e
                if not isinstance(obj, dict):
                    raise RecordError("invalid_json", "a line is not a JSON object")
                if self._track_ids and "id" in obj:  # for "alignment without units record" at the end
                    seen.append(str(obj["id"]))
                per_variant = self._pieces(obj, f"{file}:{line}", texts, counts, hist)
            except RecordError as e:
                rid = e.rid if e.rid is not None else (obj.get("id") if isinstance(obj, dict) else None)
                rejects.append(Reject(None if rid is None else str(rid), file, line, e.reason, e.detail))
                continue
            owner += [len(doc_where)] * (len(texts) - len(owner))
            doc_where.append((line, obj.get("id")))
            for v in range(nvar):
                docs[v].append(per_variant[v])
        encoded = self.sp.encode(texts, num_threads=encode_threads) if texts else []
        lens = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(lens.sum()))
        offs = np.concatenate([[0], np.cumsum(lens)])
        empty = sorted({owner[i] for i in np.flatnonzero(lens == 0).tolist()})
        if empty:  # sentencepiece gave nothing (e.g. only control characters): never a bare marker
            for d in empty:
                line, rid = doc_where[d]
                rejects.append(Reject(None if rid is None else str(rid), file, line, "empty_text",
                                      "the text encodes to no tokens"))
            rejects.sort(key=lambda r: r.line)
            drop = set(empty)
            docs = [[doc for i, doc in enumerate(dv) if i not in drop] for dv in docs]
        ids_out, lengths_out = [], []
        for v in range(nvar):
            parts, lengths = [], []
            for pieces in docs[v]:
                n = 0
                for p in pieces:
                    if isinstance(p, int):
                        p = flat[offs[p] : offs[p + 1]]
                    parts.append(p)
                    n += len(p)
                lengths.append(n)
            ids = np.concatenate(parts).astype(self.out_dtype) if parts else np.zeros(0, self.out_dtype)
            ids_out.append(ids)
            lengths_out.append(np.asarray(lengths, dtype=np.int64))
        counts["documents"] = float(len(docs[0]))
        counts["tokens"] = float(len(ids_out[0]))
        # Counters describe variant 0 (variants differ only in where the spans fall).
        base = ids_out[0]
        special = np.count_nonzero((base == self.tok.bos_id) | (base == self.tok.eos_id))
        counts["text_tokens"] = float(np.count_nonzero(base < self.vocab.base_size) - special)
        counts["speech_tokens"] = float(np.count_nonzero(base >= self.vocab.stream_offset(self.vocab.streams[0])))
        return ChunkResult(ids_out, lengths_out, rejects, counts, hist, seen)
