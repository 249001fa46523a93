"""Packs as build inputs: a shard is a range of the packs' records, in chunks of about equal unit counts.

Workers read their chunk's records straight from the memory-mapped columns (the packs are opened before the
workers fork), so a task is three integers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, NamedTuple, Sequence

import numpy as np

from ..utils.sharding import Shard, split
from .pack import Pack

if TYPE_CHECKING:
    from .batch import Reject
    from .sequences import ChunkResult, SpeechBuilder


class RecordRange(NamedTuple):
    """Records ``[start, stop)`` of pack ``pack``; ``size``: how many (what the progress bar counts)."""

    pack: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def record_ranges(packs: Sequence[Pack], shard: Shard | None, chunk_units: int) -> Iterator[RecordRange]:
    """The shard's records (an even split of all the packs' records, in order), in chunks of about
    ``chunk_units`` HuBERT runs (at least one record)."""
    for k, a, b in split([p.records for p in packs], shard):
        offsets = packs[k].batch().streams["hubert"].units.offsets
        while a < b:
            end = int(np.searchsorted(offsets, offsets[a] + chunk_units, side="right")) - 1
            end = min(max(end, a + 1), b)
            yield RecordRange(k, a, end)
            a = end


class PackSource:
    """A build's packs (``spirit-data pack``) of units manifests."""

    unit = "rec"

    def __init__(self, paths: Sequence[str]):
        self.packs = [Pack(p) for p in paths]

    def total(self, shard: Shard | None) -> int:
        return sum(b - a for _, a, b in split([p.records for p in self.packs], shard))

    def rejects(self, shard: Shard | None, kind: str) -> list[Reject]:
        """The packs' lines that were no record at all, reported by shard 0 only; an alignment without a units
        record matters to interleaved builds only."""
        if shard is not None and shard.index != 0:
            return []
        return [r for pk in self.packs for r in pk.rejects()
                if kind == "interleaved" or r.reason != "missing_units_record"]

    def chunks(self, shard: Shard | None, chunk_bytes: int) -> Iterator[RecordRange]:
        # About as many tokens per chunk as a JSONL chunk of chunk_bytes holds, or more.
        return record_ranges(self.packs, shard, max(1, chunk_bytes // 2))

    def process(self, builder: SpeechBuilder, chunk: RecordRange) -> ChunkResult:
        return builder.process_batch(self.packs[chunk.pack].batch().slice(chunk.start, chunk.stop))

    def process_without(self, builder: SpeechBuilder, chunk: RecordRange, drop: set[tuple[str, int]]) -> ChunkResult:
        """:meth:`process` with the records at ``drop`` ((file, line) pairs) left out."""
        batch = self.packs[chunk.pack].batch().slice(chunk.start, chunk.stop)
        keep = [i for i, (s, line) in enumerate(zip(batch.source.tolist(), batch.line.tolist()))
                if (batch.sources[s], line) not in drop]
        return builder.process_batch(batch.take(np.asarray(keep, dtype=np.int64)))
