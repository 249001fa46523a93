"""Records as columns: the one form sequences are built from, whatever the input (a JSONL manifest or a pack).

All per-record work — JSON, validation, word normalisation, alignment checks — happens here, once; what comes
out is a :class:`RecordBatch` of flat arrays (unit runs per stream, words as ids into a lexicon, word times), from
which :mod:`.sequences` builds every kind of sequence with vectorised numpy across records. A batch saved to disk
is a pack (:mod:`.pack`): the per-record cost is then paid once per corpus, not once per build.

Problems that only matter to some kinds (a bad alignment does not spoil a speech-only build) are stored, not
raised: ``align_problem``/``text_problem`` index ``problems`` (0 = fine), and the build that needs the alignment
or the transcript turns them into rejects.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ..speech.manifest import UnitsRecord
from ..tokenizer.vocab import HUBERT, STREAMS
from .alignments import Alignment, AlignmentError, AlignmentSource, check_alignment, normalize_text, parse_word_list
from .jsonl import loads
from .ragged import Ragged, ranges

_RATES = {s.name: s.rate for s in STREAMS}
T = TypeVar("T")


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


def decode_record(raw: bytes, parse=loads) -> dict | None:
    """One JSONL line as a JSON object (``None`` for a blank line); bad bytes or JSON are a :class:`RecordError`."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError("invalid_utf8", f"byte {e.start}: {e.reason}") from e
    if not s.strip():
        return None
    try:
        obj = parse(s)
    except json.JSONDecodeError as e:
        raise RecordError("invalid_json", str(e)) from e
    if not isinstance(obj, dict):
        raise RecordError("invalid_json", "a line is not a JSON object")
    return obj


def read_lines(lines: list[bytes], file: str, first_line: int, read: Callable[[dict, int], T],
               rejects: list[Reject], parse=loads) -> Iterator[tuple[int, dict, T]]:
    """``(line number, object, read(object, line number))`` of each JSONL line ``first_line, first_line + 1, …``
    of ``file``; blank lines are skipped, and a line that is no JSON object or that ``read`` refuses (a
    :class:`RecordError`) is appended to ``rejects`` instead."""
    for k, raw in enumerate(lines):
        line = first_line + k
        obj = None
        try:
            obj = decode_record(raw, parse)
            if obj is None:
                continue
            value = read(obj, line)
        except RecordError as e:
            rid = e.rid if e.rid is not None else (obj.get("id") if isinstance(obj, dict) else None)
            rejects.append(Reject(None if rid is None else str(rid), file, line, e.reason, e.detail))
            continue
        yield line, obj, value


def unmatched_alignments(source: AlignmentSource | None, seen) -> list[Reject]:
    """Rejects for the alignments of ``source`` (a table) whose id no units record of the input had."""
    if source is None or source.table is None:
        return []
    return [Reject(rid, str(source.path), 0, "missing_units_record",
                   "an alignment exists but the units manifest has no record with this id")
            for rid in sorted(set(source.table) - set(seen))]


def units_record(obj: dict[str, Any], where: str) -> UnitsRecord:
    """A units-manifest record; also any JSONL whose ``units`` is a plain list/string of frame-level HuBERT units
    (25 Hz) or a dict of plain per-frame lists per stream."""
    units = obj.get("units")
    if units is None:
        raise RecordError("missing_units", "the record has no 'units'", obj.get("id"))
    try:
        if isinstance(units, str):
            units = _split_units(units)
        if isinstance(units, (list, np.ndarray)):
            obj = dict(obj, units={"hubert": {"rate": 25.0, "units": units}})
        elif isinstance(units, dict) and any(isinstance(v, (list, str, np.ndarray)) for v in units.values()):
            obj = dict(obj, units={
                k: ({"rate": _RATES.get(k, 0.0), "units": _split_units(v) if isinstance(v, str) else v}
                    if isinstance(v, (list, str, np.ndarray)) else v)
                for k, v in units.items()
            })
        rec = UnitsRecord.from_json(obj, where=where)
    except ValueError as e:
        msg = str(e)
        reason = ("unit_out_of_range" if "out of range" in msg else "non_integer_unit" if "not an integer" in msg
                  else "bad_units")
        raise RecordError(reason, msg, obj.get("id")) from e
    for name, su in rec.streams.items():
        if not (np.isfinite(su.rate) and su.rate > 0):
            raise RecordError("wrong_rate", f"{where}: {name} stream at {su.rate!r} Hz", rec.id)
    hu = rec.streams["hubert"].rate
    if abs(hu - HUBERT.rate) > 1e-6:  # sequences time HuBERT runs at its own rate (the release's merge), never this
        raise RecordError("wrong_rate", f"{where}: hubert stream at {hu:g} Hz; SpiRit HuBERT units are "
                          f"{HUBERT.rate:g} Hz frames (docs/spec.md §2): re-extract at {HUBERT.rate:g} Hz", rec.id)
    return rec


def _split_units(text: str) -> list[int]:
    """A space-separated unit string (``"12 7 12"``) as integers."""
    try:
        return [int(u) for u in text.split()]
    except ValueError:
        bad = next(u for u in text.split() if not u.lstrip("-").isdigit())
        raise ValueError(f"unit {bad!r} is not an integer") from None


@dataclass
class StreamColumn:
    """One unit stream of every record: runs (``units``), their start frames, and per record frames and rate.
    ``frames`` is -1 for a record that lacks the stream."""

    units: Ragged
    starts: np.ndarray
    frames: np.ndarray
    rate: np.ndarray

    def slice(self, a: int, b: int) -> "StreamColumn":
        lo, hi = int(self.units.offsets[a]), int(self.units.offsets[b])
        return StreamColumn(self.units.slice(a, b), self.starts[lo:hi], self.frames[a:b], self.rate[a:b])

    def take(self, rows: np.ndarray) -> "StreamColumn":
        idx = ranges(self.units.offsets[rows], self.units.lengths[rows])
        return StreamColumn(self.units.take(rows), self.starts[idx], self.frames[rows], self.rate[rows])


@dataclass
class RecordBatch:
    """Records of one or more manifests as columns (see the module doc)."""

    sources: list[str]  # input files
    source: np.ndarray  # int32 [R]: index into sources
    line: np.ndarray  # int64 [R]: line in that file (1-based)
    ids: list[str]
    duration: np.ndarray  # float64 [R], seconds
    streams: dict[str, StreamColumn]
    lexicon: list[str]  # normalised words; words and transcripts hold indices into it
    words: Ragged  # aligned words (int32 lexicon ids); empty rows where there is no usable alignment
    word_starts: np.ndarray  # float64, one per aligned word
    transcript: Ragged  # normalised transcript words (int32 lexicon ids)
    align_problem: np.ndarray  # int32 [R]: 0 fine, k: problems[k - 1]
    text_problem: np.ndarray  # int32 [R]
    problems: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def problem(self, k: int) -> tuple[str, str]:
        return self.problems[k - 1]

    def reject(self, i: int, reason: str, detail: str) -> Reject:
        return Reject(self.ids[i], self.sources[int(self.source[i])], int(self.line[i]), reason, detail)

    def slice(self, a: int, b: int) -> "RecordBatch":
        lo, hi = int(self.words.offsets[a]), int(self.words.offsets[b])
        return RecordBatch(self.sources, self.source[a:b], self.line[a:b], self.ids[a:b], self.duration[a:b],
                           {k: s.slice(a, b) for k, s in self.streams.items()}, self.lexicon,
                           self.words.slice(a, b), self.word_starts[lo:hi], self.transcript.slice(a, b),
                           self.align_problem[a:b], self.text_problem[a:b], self.problems)

    def take(self, rows: np.ndarray) -> "RecordBatch":
        rows = np.asarray(rows, dtype=np.int64)
        widx = ranges(self.words.offsets[rows], self.words.lengths[rows])
        return RecordBatch(self.sources, self.source[rows], self.line[rows], [self.ids[i] for i in rows.tolist()],
                           self.duration[rows], {k: s.take(rows) for k, s in self.streams.items()}, self.lexicon,
                           self.words.take(rows), self.word_starts[widx], self.transcript.take(rows),
                           self.align_problem[rows], self.text_problem[rows], self.problems)


class RecordParser:
    """JSONL manifest lines → a :class:`RecordBatch` and the rejects of lines that are no usable record at all.

    ``alignment`` / ``transcript``: read (and check) word alignments / transcripts; a build that does not need them
    skips their cost. ``alignments``: an external source (TextGrid folder, CTM, JSON) for records without inline
    ``words``.
    """

    def __init__(self, alignment: bool, transcript: bool, alignments: AlignmentSource | None = None):
        self.want_alignment, self.want_transcript, self.alignments = alignment, transcript, alignments

    def _alignment(self, rec: UnitsRecord, obj: dict, duration: float) -> Alignment:
        inline = obj.get("words", obj.get("alignment"))
        if inline is not None:
            al = parse_word_list(inline, f"record {rec.id!r}")
        else:
            al = self.alignments.get(rec.id) if self.alignments is not None else None
            if al is None:
                raise AlignmentError("missing_alignment", "no word alignment for this record")
        text = obj.get("text")
        check_alignment(al, duration, text if isinstance(text, str) else None)
        return al

    @staticmethod
    def _transcript(obj: dict, rid: str) -> list[str]:
        """The normalised transcript: ``text``, else the words of an inline alignment."""
        text = obj.get("text")
        words = normalize_text(text) if isinstance(text, str) else []
        if not isinstance(text, str) and obj.get("words", obj.get("alignment")) is not None:
            words = list(parse_word_list(obj.get("words", obj.get("alignment")), f"record {rid!r}").words)
        if not words:
            raise AlignmentError("empty_text", "no transcript 'text' (or only punctuation)")
        return words

    def parse(self, lines: list[bytes], file: str, first_line: int) -> tuple[RecordBatch, list[Reject], list[str]]:
        """Parse raw lines ``first_line, first_line + 1, …`` of ``file``; also return every id seen (for
        "alignment without a units record")."""
        rejects: list[Reject] = []
        seen: list[str] = []
        recs: list[UnitsRecord] = []
        line_nos: list[int] = []
        durations: list[float] = []
        lexicon: dict[str, int] = {}
        words: list[list[int]] = []
        starts: list[np.ndarray] = []
        transcripts: list[list[int]] = []
        align_problem: list[int] = []
        text_problem: list[int] = []
        problems: dict[tuple[str, str], int] = {}

        def problem(e: AlignmentError) -> int:
            key = (e.reason, str(e).split(": ", 1)[-1])
            return problems.setdefault(key, len(problems) + 1)

        def read(obj: dict, line: int) -> UnitsRecord:
            if "id" in obj:
                seen.append(str(obj["id"]))
            return units_record(obj, f"{file}:{line}")

        for line, obj, rec in read_lines(lines, file, first_line, read, rejects):
            hu = rec.streams["hubert"]
            duration = rec.duration if rec.duration > 0 else hu.frames / hu.rate
            ap = tp = 0
            w: list[int] = []
            st = np.zeros(0)
            if self.want_alignment:
                try:
                    al = self._alignment(rec, obj, duration)
                    w, st = [lexicon.setdefault(x, len(lexicon)) for x in al.words], al.starts
                except AlignmentError as e:
                    ap = problem(e)
            t: list[int] = []
            if self.want_transcript:
                try:
                    t = [lexicon.setdefault(x, len(lexicon)) for x in self._transcript(obj, rec.id)]
                except AlignmentError as e:
                    tp = problem(e)
            recs.append(rec)
            line_nos.append(line)
            durations.append(duration)
            words.append(w)
            starts.append(st)
            transcripts.append(t)
            align_problem.append(ap)
            text_problem.append(tp)
        batch = RecordBatch(
            [file], np.zeros(len(recs), dtype=np.int32), np.asarray(line_nos, dtype=np.int64),
            [r.id for r in recs], np.asarray(durations, dtype=np.float64), stream_columns(recs), list(lexicon),
            Ragged.from_arrays([np.asarray(w, dtype=np.int32) for w in words], np.int32),
            np.concatenate(starts).astype(np.float64) if starts else np.zeros(0),
            Ragged.from_arrays([np.asarray(t, dtype=np.int32) for t in transcripts], np.int32),
            np.asarray(align_problem, dtype=np.int32), np.asarray(text_problem, dtype=np.int32), list(problems))
        return batch, rejects, seen


def stream_columns(recs: list[UnitsRecord]) -> dict[str, StreamColumn]:
    """Per stream present in any record: its runs as columns (repeats in input from other tools joined)."""
    out = {}
    for stream in STREAMS:
        if not any(stream.name in r.streams for r in recs) and stream.name != "hubert":
            continue
        runs = [r.streams[stream.name].runs(stream) if stream.name in r.streams else None for r in recs]
        empty = np.zeros(0, dtype=np.int64)
        out[stream.name] = StreamColumn(
            Ragged.from_arrays([empty if s is None else s.units for s in runs], np.int16),
            np.concatenate([empty if s is None else s.starts for s in runs]) if runs else empty,
            np.asarray([-1 if s is None else s.frames for s in runs], dtype=np.int64),
            np.asarray([stream.rate if s is None else s.rate for s in runs], dtype=np.float64))
    return out
