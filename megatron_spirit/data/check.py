"""What a finished dataset must be before anything reads it: whole files and one tokenizer.

A truncated ``.bin``/``.idx`` otherwise surfaces at the first batch as a numpy message, and a dataset of another
tokenizer trains without a word; so the blend of ``spirit-data mixture`` and of ``spirit-train`` is checked up
front (:func:`check_datasets`), every error naming its file.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .sink import summary_path

_HEADER = b"MMIDIDX\x00\x00"  # megatron-core's index magic, version 1
_HEADER_BYTES = 34  # magic 9, version 8, dtype code 1, sequence count 8, document count 8
_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}  # megatron-core DType codes


class DatasetError(ValueError):
    """A dataset that cannot be read as it is (missing, truncated, of another tokenizer); names the file."""


@dataclass(frozen=True)
class DatasetInfo:
    prefix: str
    sequences: int
    documents: int
    #: The tokenizer fingerprint of its summary; None for a dataset built before fingerprints (or not by us).
    fingerprint: str | None
    tokenizer: str | None


def check_files(prefix: str) -> DatasetInfo:
    """Check ``prefix``'s ``.idx`` against its own counts and the ``.bin`` against the index; raise naming the file."""
    idx, bin_ = Path(prefix + ".idx"), Path(prefix + ".bin")
    for f in (idx, bin_):
        if not f.is_file():
            raise DatasetError(f"dataset {prefix}: {f} not found")
    size = idx.stat().st_size
    with open(idx, "rb") as f:
        head = f.read(_HEADER_BYTES)
        if len(head) < _HEADER_BYTES or head[:9] != _HEADER or struct.unpack("<Q", head[9:17])[0] != 1:
            raise DatasetError(f"{idx}: not a megatron-core index (bad or truncated header, {size} bytes)")
        code = head[17]
        n, m = struct.unpack("<QQ", head[18:34])
        want = _HEADER_BYTES + 4 * n + 8 * n + 8 * m
        if code not in _ITEMSIZE or size != want:
            raise DatasetError(f"{idx}: truncated or damaged: {size} bytes, its header says {want} "
                               f"({n} sequences, {m - 1} documents); rebuild the dataset")
        want_bin = 0
        if n:  # the last sequence's length and pointer: where the .bin must end (read alone: indexes are large)
            f.seek(_HEADER_BYTES + 4 * (n - 1))
            (last_len,) = struct.unpack("<i", f.read(4))
            f.seek(_HEADER_BYTES + 4 * n + 8 * (n - 1))
            (last_ptr,) = struct.unpack("<q", f.read(8))
            want_bin = last_ptr + last_len * _ITEMSIZE[code]
    if bin_.stat().st_size != want_bin:
        raise DatasetError(f"{bin_}: {bin_.stat().st_size} bytes, its index {idx} says {want_bin}: truncated or "
                           f"from another build; rebuild the dataset")
    fp = tok = None
    if summary_path(prefix).is_file():
        try:
            s = json.loads(summary_path(prefix).read_text())
        except ValueError as e:
            raise DatasetError(f"{summary_path(prefix)}: not JSON ({e})") from e
        fp, tok = s.get("tokenizer_fingerprint"), s.get("tokenizer")
    return DatasetInfo(prefix, int(n), int(m) - 1, fp, tok)


def predates_fingerprints(prefix: str) -> str:
    """The warning for a dataset whose tokenizer cannot be checked."""
    return (f"dataset {prefix} records no tokenizer fingerprint (built before fingerprints, or not by spirit-data "
            f"build): its tokenizer cannot be checked; rebuild it with `spirit-data build ... --overwrite` to record "
            f"one")


def check_datasets(prefixes: Sequence[str], fingerprint: str | None = None,
                   tokenizer: str | None = None) -> tuple[list[DatasetInfo], list[str]]:
    """Check every dataset (:func:`check_files`) and that all were built with one tokenizer — ``fingerprint``'s
    when given (``tokenizer``: its folder, for the message). Returns the infos and warnings (datasets that
    predate fingerprints); raises :class:`DatasetError` on the first problem."""
    infos = [check_files(p) for p in prefixes]
    known = [i for i in infos if i.fingerprint is not None]
    warnings = [predates_fingerprints(i.prefix) for i in infos if i.fingerprint is None]
    if fingerprint is not None:
        for i in known:
            if i.fingerprint != fingerprint:
                raise DatasetError(
                    f"dataset {i.prefix} was built with tokenizer {i.tokenizer} (fingerprint {i.fingerprint}), not "
                    f"with {tokenizer or 'this tokenizer'} ({fingerprint}): its ids mean other tokens; rebuild it "
                    f"with this tokenizer or train with that one")
    elif len({i.fingerprint for i in known}) > 1:
        a = known[0]
        b = next(i for i in known if i.fingerprint != a.fingerprint)
        raise DatasetError(f"datasets of different tokenizers: {a.prefix} ({a.tokenizer}, {a.fingerprint}) and "
                           f"{b.prefix} ({b.tokenizer}, {b.fingerprint}); rebuild them with one tokenizer")
    return infos, warnings
