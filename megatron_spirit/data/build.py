"""One dataset build: a source's chunks → sequences in ``workers`` processes (results kept in input order) → the
sink; atomic and resumable.

Inputs are JSONL files (:mod:`.source_jsonl`) or packs (:mod:`.source_pack`), each cutting its shard into chunks;
sequences come from :mod:`.sequences` and go to megatron-core indexed datasets (:mod:`.sink`); rejects and the
summary that marks a finished build are :mod:`.summary`'s. A killed build leaves only temporary files; its re-run
builds again, and a re-run of a finished build returns the summary it left when the arguments that shape the
output match the recorded ones (:func:`shaping_args`), else stops naming what changed. A build that writes nothing,
or rejects more than ``--max-reject-fraction`` of its records, fails and keeps no dataset.
"""
from __future__ import annotations

import collections
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.sharding import Shard
from .batch import unmatched_alignments
from .ordered_pool import ordered_map
from .pack import is_pack
from .sequences import HIST_BINS, ChunkResult, SequenceBuilder, SequenceConfig, builder_for
from .batch import Reject
from .sink import DatasetSink, disk_errors, output_prefixes, rejects_path
from .source_jsonl import JsonlSource
from .source_pack import PackSource
from .summary import BuildSummary, DataBuildError, RejectLog, finished

#: Default of ``--max-reject-fraction``: a build that rejects more than this share of its records fails.
MAX_REJECT_FRACTION = 0.5
#: Build arguments as the CLI names them, for the message of a refused resume.
_OPTIONS = {"kind": "--kind", "inputs": "--input", "tokenizer_fingerprint": "--tokenizer", "flavor": "--flavor",
            "json_key": "--json-key", "alignments": "--alignments", "variants": "--variants", "seed": "--seed",
            "spans": "--text-span/--speech-span", "shard": "--shard"}


def open_source(inputs: Sequence[str], kind: str, alignments: str | None) -> JsonlSource | PackSource:
    """The inputs as a source: all JSONL files or all packs."""
    packed = [is_pack(p) for p in inputs]
    for p, is_packed in zip(inputs, packed):
        if not is_packed and not os.path.isfile(p):
            raise FileNotFoundError(f"input {p} not found")
    if not any(packed):
        return JsonlSource(inputs)
    if not all(packed):
        raise ValueError("inputs must be all JSONL files or all packs (spirit-data pack), not a mix")
    if kind == "text":
        raise ValueError("--kind text reads JSONL text corpora; packs hold units manifests")
    if alignments is not None:
        raise ValueError("packs carry the alignments given to `spirit-data pack`; --alignments is for JSONL inputs")
    return PackSource(inputs)


class _Worker:
    """What a build process does with a chunk (the pool's initializer hands it over; see :mod:`.ordered_pool`)."""

    def __init__(self, source: JsonlSource | PackSource, builder: SequenceBuilder):
        self.source, self.builder = source, builder

    def __call__(self, chunk) -> tuple[int, ChunkResult]:
        return chunk.size, self.source.process(self.builder, chunk)


@dataclass
class _Totals:
    """Running counts of the chunks written so far (variant 0's)."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    span_hist: np.ndarray = field(default_factory=lambda: np.zeros((2, HIST_BINS), dtype=np.int64))
    seen_ids: set[str] = field(default_factory=set)

    def add(self, res: ChunkResult) -> None:
        self.counts.update(res.counts)
        if res.span_hist is not None:
            self.span_hist += res.span_hist
        self.seen_ids.update(res.seen_ids)


def _file_state(path: str) -> dict:
    """A file (or a pack / alignment folder) as it is now: path, size and modification time."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file()]
        return {"path": str(p.resolve()), "files": len(files), "bytes": sum(f.stat().st_size for f in files),
                "mtime_ns": max((f.stat().st_mtime_ns for f in files), default=0)}
    st = p.stat()
    return {"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def shaping_args(inputs: Sequence[str], cfg: SequenceConfig, fingerprint: str, flavor: str,
                 alignments: str | None, shard: Shard | None) -> dict:
    """What decides a build's output (and nothing that does not, like ``--workers``): a finished build is reused
    only when these match."""
    inter = cfg.kind == "interleaved"
    return {"kind": cfg.kind, "inputs": [_file_state(p) for p in inputs], "tokenizer_fingerprint": fingerprint,
            "flavor": None if cfg.kind == "text" else flavor, "json_key": cfg.json_key if cfg.kind == "text" else None,
            "alignments": _file_state(alignments) if inter and alignments else None,
            "variants": cfg.variants, "seed": cfg.seed if inter else None,
            "spans": asdict(cfg.spans) if inter else None, "shard": None if shard is None else list(shard)}


def check_resume(done: BuildSummary, args: dict, out: str) -> BuildSummary:
    """``done`` when it was built with ``args``; else an error saying which argument changed."""
    if done.build_args is None:
        raise DataBuildError(f"{out}: finished by a build that predates recorded build arguments: cannot tell whether "
                             f"it matches these; --overwrite to rebuild it")
    if done.build_args == args:
        return done
    changed = [k for k in args if done.build_args.get(k) != args[k]]
    parts = []
    for k in changed:
        if k == "inputs":
            was, now = ([i["path"] for i in a["inputs"]] for a in (done.build_args, args))
            parts.append("--input (the files changed since: size or modification time)" if was == now
                         else f"--input (was {was}, now {now})")
        else:
            parts.append(f"{_OPTIONS.get(k, k)} (was {done.build_args.get(k)!r}, now {args[k]!r})")
    raise DataBuildError(f"{out}: finished by a build with other arguments: {'; '.join(parts)}; --overwrite to "
                         f"rebuild it (or write to another --out)")


class _Duplicates:
    """The ids written so far (speech kinds), to reject a later record with the same id; within a shard only."""

    def __init__(self):
        self.first: dict[str, tuple[str, int]] = {}

    def drop(self, res: ChunkResult) -> tuple[set[tuple[str, int]], list[Reject]]:
        """The (file, line) of the chunk's records whose id was written before, and their rejects."""
        drop, rejects = set(), []
        for rid, file, line in res.written:
            at = self.first.setdefault(rid, (file, line))
            if at != (file, line):
                drop.add((file, line))
                rejects.append(Reject(rid, file, line, "duplicate_id",
                                      f"record {rid!r} was already written from {at[0]}:{at[1]}; only the first "
                                      f"record of an id is kept"))
        return drop, rejects


def _check_rejects(log: RejectLog, documents: int, max_fraction: float, out: str, inputs: Sequence[str],
                   rejects_file: Path, empty_ok: bool = False) -> None:
    """Refuse a build that wrote nothing or rejected more than ``max_fraction`` of its records, writing its
    rejects file (``empty_ok``: a shard that owns no record at all is fine)."""
    rejected = sum(n for reason, n in log.by_reason.items() if reason != "missing_units_record")
    total = rejected + documents
    if total == 0 and not empty_ok:
        raise DataBuildError(f"{out}: no records in {', '.join(inputs)}: nothing to write")
    if total and (documents == 0 or rejected > max_fraction * total):
        log.write(rejects_file)
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(log.by_reason.items()))
        raise DataBuildError(f"{out}: {rejected} of {total} records rejected ({reasons}), more than "
                             f"--max-reject-fraction {max_fraction}: nothing written (see {rejects_file})")


def _progress(enabled: bool, total: int, unit: str, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, mininterval=1.0, file=sys.stderr)


def _write_chunks(source, builder: SequenceBuilder, shard: Shard | None, chunk_bytes: int, workers: int,
                  sink: DatasetSink, log: RejectLog, totals: _Totals, bar) -> None:
    """The source's chunks built in ``workers`` processes and written in input order; a record whose id was
    written before is rejected (its chunk built again without it, here: rare)."""
    dups, in_flight = _Duplicates(), collections.deque()
    t0 = time.perf_counter()

    def chunks():  # the chunks given to the workers, kept here until their results come (in order)
        for c in source.chunks(shard, chunk_bytes):
            in_flight.append(c)
            yield c

    for size, res in ordered_map(_Worker(source, builder), chunks(), workers):
        chunk = in_flight.popleft()
        drop, dup_rejects = dups.drop(res)
        if drop:
            seen = res.seen_ids
            res = source.process_without(builder, chunk, drop)
            res.seen_ids = seen
            res.rejects = sorted(res.rejects + dup_rejects, key=lambda r: (r.file, r.line))
        log.add(res.rejects)
        sink.add(res.ids, res.lengths)
        totals.add(res)
        if bar is not None:
            bar.update(size)
            rate = totals.counts["tokens"] / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{rate / 1e6:.2f}M tok/s", refresh=False)


def build_dataset(
    inputs: Sequence[str],
    out: str,
    tokenizer_dir: str,
    cfg: SequenceConfig,
    *,
    flavor: str | None = None,
    alignments: str | None = None,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    chunk_bytes: int = 1 << 20,
    max_reject_fraction: float = MAX_REJECT_FRACTION,
) -> BuildSummary:
    """Build the dataset(s) of ``inputs`` under ``out`` (a prefix per variant); return the summary, ``skipped``
    when an earlier build with the same shaping arguments had finished them (unless ``overwrite``; other
    arguments are an error). A build that writes nothing, or rejects more than ``max_reject_fraction`` of its
    records, is an error and keeps nothing but its rejects file."""
    inputs = [str(p) for p in inputs]
    shard = None if shard is None else Shard(*shard)
    source = open_source(inputs, cfg.kind, alignments)
    prefixes = output_prefixes(out, cfg.variants, shard)
    builder = builder_for(tokenizer_dir, cfg, flavor, alignments)
    args = shaping_args(inputs, cfg, builder.tok.fingerprint, builder.vocab.flavor, alignments, shard)
    if not overwrite and (done := finished(prefixes)) is not None:
        return check_resume(done, args, out)
    with disk_errors(Path(out).parent):  # a full disk: say so and name the folder
        sink = DatasetSink(prefixes, builder.out_dtype)
        log, totals = RejectLog(strict), _Totals()
        t0 = time.perf_counter()
        bar = _progress(progress, source.total(shard), source.unit, f"{cfg.kind} {Path(out).name}")
        try:
            log.add(source.rejects(shard, cfg.kind))
            _write_chunks(source, builder, shard, chunk_bytes, workers, sink, log, totals, bar)
            if cfg.kind == "interleaved" and shard is None:  # a shard cannot know the other shards' records
                log.add(unmatched_alignments(builder.alignments, totals.seen_ids))
            rejects_file = rejects_path(out, shard)
            # A shard may own no line of non-empty inputs (more shards than records).
            _check_rejects(log, int(totals.counts["documents"]), max_reject_fraction, out, inputs, rejects_file,
                           empty_ok=shard is not None and source.total(None) > 0)
            sink.finalize()
            log.write(rejects_file)
        except BaseException:
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - t0
        counts, interleaved = totals.counts, cfg.kind == "interleaved"
        summary = BuildSummary(
            kind=cfg.kind, inputs=inputs, tokenizer=str(tokenizer_dir), flavor=builder.vocab.flavor,
            vocab_size=builder.tok.vocab_size, dtype=np.dtype(builder.out_dtype).name,
            documents=int(counts["documents"]), tokens=int(counts["tokens"]), text_tokens=int(counts["text_tokens"]),
            speech_tokens=int(counts["speech_tokens"]), speech_seconds=float(counts.get("speech_seconds", 0.0)),
            rejected=len(log), rejects_by_reason=dict(sorted(log.by_reason.items())), rejects_file=str(rejects_file),
            shard=None if shard is None else list(shard), variants=cfg.variants, seed=cfg.seed,
            spans=asdict(cfg.spans) if interleaved else None,
            span_words_hist={"text": totals.span_hist[0].tolist(), "speech": totals.span_hist[1].tolist()}
            if interleaved else None,
            workers=workers, elapsed_s=round(elapsed, 3),
            tokens_per_s=round(counts["tokens"] / max(elapsed, 1e-9), 1), prefixes=prefixes,
            tokenizer_fingerprint=builder.tok.fingerprint, build_args=args)
        sink.commit()
        for k, p in enumerate(prefixes):  # the summaries last: they mark the prefixes finished
            replace(summary, prefix=p, variant=k).write()
        return replace(summary, prefix=prefixes[0], variant=0)
