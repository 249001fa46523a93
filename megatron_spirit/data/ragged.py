"""Ragged arrays (rows of different lengths as one flat array + offsets) and the few operations sequence
building needs, all vectorised: a chunk of thousands of records is a handful of numpy calls, never a Python
loop per record or per token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` without the loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


@dataclass
class Ragged:
    """Row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_arrays(cls, arrays, dtype=np.int64) -> "Ragged":
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        values = np.concatenate(arrays).astype(dtype, copy=False) if len(arrays) else np.zeros(0, dtype)
        return cls(values, offsets_of(lengths))

    @classmethod
    def constant(cls, rows: int, row: np.ndarray) -> "Ragged":
        """``rows`` copies of one short row (markers such as ``<s>[Speech]``)."""
        row = np.asarray(row)
        return cls(np.tile(row, rows), np.arange(rows + 1, dtype=np.int64) * len(row))

    @classmethod
    def empty(cls, rows: int, dtype=np.int64) -> "Ragged":
        return cls(np.zeros(0, dtype=dtype), np.zeros(rows + 1, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_of_value(self) -> np.ndarray:
        """The row index of every value."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def take(self, rows: np.ndarray) -> "Ragged":
        """The rows ``rows`` (any order, repeats allowed), as a new ragged array."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        return Ragged(self.values[ranges(self.offsets[rows], lengths)], offsets_of(lengths))

    def slice(self, a: int, b: int) -> "Ragged":
        """Rows ``a..b-1`` (a view of the values when they are contiguous, as in a memory-mapped pack)."""
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        return Ragged(self.values[lo:hi], self.offsets[a : b + 1] - lo)

    def group(self, group_offsets: np.ndarray) -> "Ragged":
        """Consecutive rows joined: new row ``j`` is old rows ``group_offsets[j] .. group_offsets[j + 1] - 1``."""
        return Ragged(self.values, self.offsets[np.asarray(group_offsets, dtype=np.int64)])


def concat_rows(parts: list[Ragged], dtype=np.int64) -> Ragged:
    """Row-wise concatenation: row ``i`` of the result is row ``i`` of each part, in order."""
    rows = len(parts[0])
    lengths = [p.lengths for p in parts]
    out_offsets = offsets_of(np.sum(lengths, axis=0) if rows else np.zeros(0, dtype=np.int64))
    out = np.empty(int(out_offsets[-1]), dtype=dtype)
    before = out_offsets[:-1].copy()  # where each row's next part starts
    for p, n in zip(parts, lengths):
        if len(p) != rows:
            raise ValueError(f"concat_rows: parts have {rows} and {len(p)} rows")
        out[ranges(before, n)] = p.values[p.offsets[0] : p.offsets[-1]]
        before += n
    return Ragged(out, out_offsets)
