"""Where sequences go: megatron-core indexed datasets (``.bin``/``.idx``), named per prefix, written atomically.

A build writes one prefix per variant (``out`` or ``out_v0 … out_v{N-1}``, with ``-shardIIIIIofNNNNN`` under
``--shard``); each gets ``.bin``, ``.idx`` and ``.summary.json`` (:mod:`.summary`, written last: the mark of a
finished prefix). ``.bin``/``.idx`` are written as ``<name>.tmp`` and renamed only once both are complete, so a
killed build never leaves a prefix that looks complete.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.sharding import Shard

SHARD_RE = re.compile(r"^(?P<base>.*)-shard(?P<i>\d{5})of(?P<n>\d{5})$")


def shard_suffix(shard: Shard | None) -> str:
    return "" if shard is None else f"-shard{shard.index:05d}of{shard.count:05d}"


def output_prefixes(out: str, variants: int, shard: Shard | None = None) -> list[str]:
    """Prefixes one build writes: ``out`` or ``out_v0 … out_v{N-1}``; with a shard suffix under ``--shard``."""
    bases = [out] if variants == 1 else [f"{out}_v{k}" for k in range(variants)]
    return [b + shard_suffix(shard) for b in bases]


def rejects_path(out: str, shard: Shard | None = None) -> Path:
    """One rejects file per build (not per variant: variants share their records)."""
    return Path(out + shard_suffix(shard) + ".rejects.jsonl")


def summary_path(prefix: str) -> Path:
    return Path(prefix + ".summary.json")


def is_complete(prefix: str) -> bool:
    return summary_path(prefix).is_file() and Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()


def remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


class DiskFullError(OSError):
    """No space left where a build or merge writes; the message names the folder."""


@contextlib.contextmanager
def disk_errors(folder: str | os.PathLike):
    """A full disk while writing into ``folder`` as an error that says so and names the folder (a bare
    ``OSError: [Errno 28]`` names neither); the caller's clean-up has already run."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENOSPC or isinstance(e, DiskFullError):
            raise
        raise DiskFullError(errno.ENOSPC, f"no space left on device while writing into {Path(folder).resolve()}"
                            f"{f' ({e.filename})' if e.filename else ''}; free space there or write elsewhere: "
                            f"nothing of this run was kept, earlier outputs are as they were") from e


def add_documents(builder, ids: np.ndarray, lengths: np.ndarray) -> None:
    """``builder.add_document(seq, [len(seq)])`` for each sequence of a chunk, in one write (what that call does,
    without a Python call and a copy per document)."""
    builder.data_file.write(np.ascontiguousarray(ids, dtype=builder.dtype).tobytes(order="C"))
    first = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(np.asarray(lengths).tolist())
    builder.document_indices.extend(range(first + 1, first + len(lengths) + 1))


class DatasetSink:
    """megatron-core ``IndexedDatasetBuilder``s for ``prefixes``, one document per sequence: :meth:`finalize`
    writes the indexes, :meth:`commit` renames both files into place, :meth:`abort` removes the partial files.

    Opening removes what an older build left under these prefixes (its summary first): nothing of it may look
    complete while this one runs.
    """

    def __init__(self, prefixes: Sequence[str], dtype):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefixes = list(prefixes)
        for p in self.prefixes:
            remove(summary_path(p), Path(p + ".idx"), Path(p + ".bin"), Path(p + ".bin.tmp"), Path(p + ".idx.tmp"))
            Path(p).parent.mkdir(parents=True, exist_ok=True)
        self.writers = [IndexedDatasetBuilder(p + ".bin.tmp", dtype=dtype) for p in self.prefixes]

    def add(self, ids: Sequence[np.ndarray], lengths: Sequence[np.ndarray]) -> None:
        """One chunk: per prefix, the flat ids of its sequences and their lengths."""
        for w, i, n in zip(self.writers, ids, lengths):
            add_documents(w, i, n)

    def add_index(self, prefix: str) -> None:
        """Append a finished dataset to the (single) prefix: megatron-core's ``add_index``."""
        (w,) = self.writers
        w.add_index(prefix)

    def finalize(self) -> None:
        for w, p in zip(self.writers, self.prefixes):
            w.finalize(p + ".idx.tmp")

    def commit(self) -> None:
        for p in self.prefixes:
            os.replace(p + ".bin.tmp", p + ".bin")
            os.replace(p + ".idx.tmp", p + ".idx")

    def abort(self) -> None:
        for w, p in zip(self.writers, self.prefixes):
            if not w.data_file.closed:
                w.data_file.close()
            remove(Path(p + ".bin.tmp"), Path(p + ".idx.tmp"))
