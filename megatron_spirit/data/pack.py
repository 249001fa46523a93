"""A pack: a units manifest (with its word alignments and transcripts) parsed once and stored as columns.

JSON costs about 30 bytes per unit token to read, and reading it is most of a speech build; a corpus is built many
times (flavors, kinds, span settings, seeds), but parsed once here. A pack is a folder ``NAME.spiritpack``::

    pack.json           format, sources (file, size), record count, columns (dtype, length), problems
    lexicon.json        normalised words (the words and transcript columns index it)
    rejects.jsonl       lines that are no usable record at all (file, line, reason), reported by every build
    <column>.bin        raw little-endian arrays: a RecordBatch's fields (record ids as UTF-8 bytes + offsets, source,
                        line, duration, per-stream units/starts/offsets/frames/rate, words, word_starts, transcript,
                        problems, ...)

Columns are memory-mapped on read, record ids included (decoded one chunk at a time), so a build of one shard of
a pack reads only that shard's records and forked workers share one copy of everything.
Written under a temporary name and renamed when complete: a killed ``pack`` leaves nothing that looks finished.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.atomic import atomic_dir
from .alignments import AlignmentSource
from .batch import RecordBatch, RecordParser, Reject, StreamColumn, unmatched_alignments
from .ordered_pool import ordered_map
from .ragged import Ragged, offsets_of
from .sink import disk_errors
from .source_jsonl import JsonlSource, LineChunk

FORMAT = "megatron_spirit.pack/1"
SUFFIX = ".spiritpack"


def is_pack(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / "pack.json").is_file()


class _Columns:
    """Append-only raw column files, with each ragged column's row lengths kept to write offsets at the end."""

    def __init__(self, folder: Path):
        self.folder, self.files, self.dtypes, self.sizes = folder, {}, {}, {}

    def add(self, name: str, values: np.ndarray, dtype) -> None:
        if name not in self.files:
            self.files[name] = open(self.folder / f"{name}.bin", "wb")
            self.dtypes[name], self.sizes[name] = np.dtype(dtype).str, 0
        arr = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
        self.files[name].write(arr.tobytes())
        self.sizes[name] += len(arr)

    def close(self) -> dict:
        for f in self.files.values():
            f.close()
        return {k: {"dtype": self.dtypes[k], "length": self.sizes[k]} for k in self.files}


class _ParseWorker:
    """A chunk of manifest lines → (its RecordBatch, rejects, ids seen) and its size: what a packing process does."""

    def __init__(self, parser: RecordParser):
        self.parser = parser

    def __call__(self, chunk: LineChunk):
        return self.parser.parse(chunk.lines, chunk.file, chunk.first_line), chunk.size


def pack_manifests(inputs: Sequence[str], out: str, alignments: str | None = None, *, workers: int = 1,
                   progress: bool = True, chunk_bytes: int = 1 << 22) -> dict:
    """Parse units manifests (JSONL; alignments inline or from ``alignments``) into the pack ``out``, in
    ``workers`` processes."""
    source = JsonlSource(inputs)
    inputs = source.files
    alignment_source = AlignmentSource(alignments) if alignments else None
    parser = RecordParser(alignment=True, transcript=True, alignments=alignment_source)
    lexicon: dict[str, int] = {}
    problems: dict[tuple[str, str], int] = {}
    records = 0
    rejects: list[Reject] = []
    seen: set[str] = set()
    lengths: dict[str, list[np.ndarray]] = {}
    stream_names: set[str] = set()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.total(None), unit=source.unit, unit_scale=True,
                   desc=f"pack {Path(out).name}", mininterval=1.0, file=sys.stderr)
    with disk_errors(Path(out).parent), atomic_dir(out) as tmp:
        cols = _Columns(tmp)
        for (batch, bad, seen_ids), size in ordered_map(_ParseWorker(parser), source.chunks(None, chunk_bytes), workers):
            path = batch.sources[0]
            rejects += bad
            seen.update(seen_ids)
            n = len(batch)
            records += n
            lex = np.fromiter((lexicon.setdefault(w, len(lexicon)) for w in batch.lexicon), dtype=np.int32,
                              count=len(batch.lexicon))
            prob = np.zeros(len(batch.problems) + 1, dtype=np.int32)
            prob[1:] = [problems.setdefault(p, len(problems) + 1) for p in batch.problems]
            encoded = [i.encode("utf-8", "surrogatepass") for i in batch.ids]
            cols.add("ids", np.frombuffer(b"".join(encoded), dtype=np.uint8), np.uint8)
            lengths.setdefault("ids", []).append(np.fromiter(map(len, encoded), dtype=np.int64, count=n))
            cols.add("source", np.full(n, inputs.index(path)), np.int32)
            cols.add("line", batch.line, np.int64)
            cols.add("duration", batch.duration, np.float64)
            cols.add("align_problem", prob[batch.align_problem], np.int32)
            cols.add("text_problem", prob[batch.text_problem], np.int32)
            cols.add("words", lex[batch.words.values], np.int32)
            cols.add("word_starts", batch.word_starts, np.float64)
            cols.add("transcript", lex[batch.transcript.values], np.int32)
            lengths.setdefault("words", []).append(batch.words.lengths)
            lengths.setdefault("transcript", []).append(batch.transcript.lengths)
            for name in ("hubert", "pitch", "style"):
                col = batch.streams.get(name)
                if col is None:  # no record of this chunk has the stream
                    col = StreamColumn(Ragged.empty(n, np.int16), np.zeros(0, np.int64), np.full(n, -1, np.int64),
                                       np.zeros(n))
                else:
                    stream_names.add(name)
                cols.add(f"{name}.units", col.units.values, np.int16)
                cols.add(f"{name}.starts", col.starts, np.int64)
                cols.add(f"{name}.frames", col.frames, np.int64)
                cols.add(f"{name}.rate", col.rate, np.float64)
                lengths.setdefault(name, []).append(col.units.lengths)
            if bar is not None:
                bar.update(size)
        rejects += unmatched_alignments(alignment_source, seen)
        for name, parts in lengths.items():
            cols.add(f"{name}.offsets", offsets_of(np.concatenate(parts)), np.int64)
        columns = cols.close()
        (tmp / "lexicon.json").write_text(json.dumps(list(lexicon), ensure_ascii=False), encoding="utf-8")
        (tmp / "rejects.jsonl").write_text(
            "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rejects), encoding="utf-8")
        meta = {
            "format": FORMAT,
            "sources": [{"file": p, "bytes": os.path.getsize(p)} for p in inputs],
            "alignments": None if alignments is None else str(alignments),
            "records": records,
            "streams": sorted(stream_names, key=["hubert", "pitch", "style"].index),
            "lexicon": len(lexicon),
            "aligned": int(np.count_nonzero(np.fromfile(tmp / "align_problem.bin", dtype="<i4") == 0)),
            "hubert_units": columns.get("hubert.units", {}).get("length", 0),
            "rejected": len(rejects),
            "problems": [list(p) for p in problems],
            "columns": columns,
            "elapsed_s": round(time.perf_counter() - t0, 3),
        }
        (tmp / "pack.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    if bar is not None:
        bar.close()
    return meta


class PackedStrings(Sequence[str]):
    """Strings stored as UTF-8 bytes + offsets (a memory-mapped column), decoded on access; slices are views."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            a, b, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(a, b, step)]
            return PackedStrings(self.data, self.offsets[a : b + 1])
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self.data[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8", "surrogatepass")

    def __iter__(self):
        raw = bytes(self.data[self.offsets[0] : self.offsets[-1]])
        base = int(self.offsets[0])
        for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist()):
            yield raw[a - base : b - base].decode("utf-8", "surrogatepass")


class Pack:
    """A pack opened for reading: :meth:`batch` is a view of all its records (memory-mapped columns)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not is_pack(self.path):
            raise FileNotFoundError(f"{self.path}: not a pack (no pack.json; write one with `spirit-data pack`)")
        self.meta = json.loads((self.path / "pack.json").read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: pack format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.records = int(self.meta["records"])
        self._batch: RecordBatch | None = None

    def column(self, name: str) -> np.ndarray:
        c = self.meta["columns"][name]
        if c["length"] == 0:
            return np.zeros(0, dtype=np.dtype(c["dtype"]))
        return np.memmap(self.path / f"{name}.bin", dtype=np.dtype(c["dtype"]), mode="r", shape=(c["length"],))

    def rejects(self) -> list[Reject]:
        return [Reject(**json.loads(line)) for line in (self.path / "rejects.jsonl").read_text("utf-8").splitlines()]

    def batch(self) -> RecordBatch:
        if self._batch is None:
            c = self.column
            streams = {}
            for name in self.meta["streams"]:
                units = Ragged(c(f"{name}.units"), np.asarray(c(f"{name}.offsets")))
                streams[name] = StreamColumn(units, c(f"{name}.starts"), np.asarray(c(f"{name}.frames")),
                                             np.asarray(c(f"{name}.rate")))
            self._batch = RecordBatch(
                [s["file"] for s in self.meta["sources"]], np.asarray(c("source")), np.asarray(c("line")),
                PackedStrings(c("ids"), np.asarray(c("ids.offsets"))), np.asarray(c("duration")), streams,
                json.loads((self.path / "lexicon.json").read_text("utf-8")),
                Ragged(c("words"), np.asarray(c("words.offsets"))), c("word_starts"),
                Ragged(c("transcript"), np.asarray(c("transcript.offsets"))),
                np.asarray(c("align_problem")), np.asarray(c("text_problem")),
                [tuple(p) for p in self.meta["problems"]])
        return self._batch
