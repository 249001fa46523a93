"""JSONL inputs as chunks of raw lines: a shard is a byte range of the files concatenated.

A line belongs to the shard whose range holds its first byte, so shards split files anywhere and still partition
the lines. Lines stay bytes here: decoding and parsing happen in the workers (:mod:`.batch`, :mod:`.sequences`).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator, NamedTuple, Sequence

from ..utils.sharding import Shard, split

if TYPE_CHECKING:
    from .batch import Reject
    from .sequences import ChunkResult, SequenceBuilder


class LineChunk(NamedTuple):
    """Raw lines ``first_line, first_line + 1, …`` of ``file`` (without their line ends), and their bytes."""

    file: str
    first_line: int
    lines: list[bytes]
    size: int


def byte_ranges(files: Sequence[str], shard: Shard | None) -> list[tuple[str, int, int]]:
    """``(file, lo, hi)``: the bytes of each file the shard owns."""
    return [(str(files[k]), a, b) for k, a, b in split([os.path.getsize(f) for f in files], shard)]


def read_chunks(files: Sequence[str], shard: Shard | None, chunk_bytes: int = 1 << 20,
                chunk_lines: int = 8192) -> Iterator[LineChunk]:
    """The shard's lines in chunks of about ``chunk_bytes`` (at most ``chunk_lines`` lines), in order."""
    for path, lo, hi in byte_ranges(files, shard):
        with open(path, "rb") as f:
            line_no = 1
            pos = 0
            if lo > 0:
                # Count lines before our range (cheap: bytes.count), then skip the line holding byte lo-1.
                while pos < lo - 1:
                    block = f.read(min(1 << 24, lo - 1 - pos))
                    line_no += block.count(b"\n")
                    pos += len(block)
                tail = f.readline()
                if tail.endswith(b"\n"):
                    line_no += 1
                pos += len(tail)
            lines: list[bytes] = []
            size, first = 0, line_no
            while pos < hi:
                raw = f.readline()
                if not raw:
                    break
                if pos == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark opens the file
                    raw = raw[3:]
                    pos += 3
                pos += len(raw)
                lines.append(raw.rstrip(b"\r\n"))
                size += len(raw)
                line_no += 1
                if size >= chunk_bytes or len(lines) >= chunk_lines:
                    yield LineChunk(path, first, lines, size)
                    lines, size, first = [], 0, line_no
            if lines:
                yield LineChunk(path, first, lines, size)


class JsonlSource:
    """A build's JSONL inputs: text corpora or units manifests."""

    unit = "B"  # what chunk sizes count

    def __init__(self, files: Sequence[str]):
        for p in files:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"input {p} not found")
        self.files = [str(p) for p in files]

    def total(self, shard: Shard | None) -> int:
        return sum(b - a for _, a, b in byte_ranges(self.files, shard))

    def rejects(self, shard: Shard | None, kind: str) -> list[Reject]:
        """Rejects known before reading (none: every line is judged by the worker that reads it)."""
        return []

    def chunks(self, shard: Shard | None, chunk_bytes: int) -> Iterator[LineChunk]:
        return read_chunks(self.files, shard, chunk_bytes=chunk_bytes)

    def process(self, builder: SequenceBuilder, chunk: LineChunk) -> ChunkResult:
        return builder.process(chunk.lines, chunk.file, chunk.first_line)

    def process_without(self, builder: SequenceBuilder, chunk: LineChunk, drop: set[tuple[str, int]]) -> ChunkResult:
        """:meth:`process` with the records at ``drop`` ((file, line) pairs) left out (as blank lines)."""
        lines = [b"" if (chunk.file, chunk.first_line + k) in drop else raw for k, raw in enumerate(chunk.lines)]
        return builder.process(lines, chunk.file, chunk.first_line)
