"""One dataset build: a source's chunks → sequences in ``workers`` processes (results kept in input order) → the
sink; atomic and resumable.

Inputs are JSONL files (:mod:`.source_jsonl`) or packs (:mod:`.source_pack`), each cutting its shard into chunks;
sequences come from :mod:`.sequences` and go to megatron-core indexed datasets (:mod:`.sink`); rejects and the
summary that marks a finished build are :mod:`.summary`'s. A killed build leaves only temporary files; its re-run
builds again, and a re-run of a finished build returns the summary it left.
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
from .sink import DatasetSink, output_prefixes, rejects_path
from .source_jsonl import JsonlSource
from .source_pack import PackSource
from .summary import BuildSummary, RejectLog, finished


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


def _progress(enabled: bool, total: int, unit: str, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, mininterval=1.0, file=sys.stderr)


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
) -> BuildSummary:
    """Build the dataset(s) of ``inputs`` under ``out`` (a prefix per variant); return the summary, ``skipped``
    when an earlier build had finished them (unless ``overwrite``)."""
    inputs = [str(p) for p in inputs]
    shard = None if shard is None else Shard(*shard)
    source = open_source(inputs, cfg.kind, alignments)
    prefixes = output_prefixes(out, cfg.variants, shard)
    if not overwrite and (done := finished(prefixes)) is not None:
        return done

    builder = builder_for(tokenizer_dir, cfg, flavor, alignments)
    sink = DatasetSink(prefixes, builder.out_dtype)
    log, totals = RejectLog(strict), _Totals()
    t0 = time.perf_counter()
    bar = _progress(progress, source.total(shard), source.unit, f"{cfg.kind} {Path(out).name}")
    try:
        log.add(source.rejects(shard, cfg.kind))
        for size, res in ordered_map(_Worker(source, builder), source.chunks(shard, chunk_bytes), workers):
            log.add(res.rejects)
            sink.add(res.ids, res.lengths)
            totals.add(res)
            if bar is not None:
                bar.update(size)
                rate = totals.counts["tokens"] / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{rate / 1e6:.2f}M tok/s", refresh=False)
        if cfg.kind == "interleaved" and shard is None:  # a shard cannot know the other shards' records
            log.add(unmatched_alignments(builder.alignments, totals.seen_ids))
        sink.finalize()
    except BaseException:
        sink.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0

    rejects_file = rejects_path(out, shard)
    log.write(rejects_file)
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
        workers=workers, elapsed_s=round(elapsed, 3), tokens_per_s=round(counts["tokens"] / max(elapsed, 1e-9), 1),
        prefixes=prefixes)
    sink.commit()
    for k, p in enumerate(prefixes):  # the summaries last: they mark the prefixes finished
        replace(summary, prefix=p, variant=k).write()
    return replace(summary, prefix=prefixes[0], variant=0)
