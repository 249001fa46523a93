"""Unit streams ↔ token strings and ids: deduplication, the EXPRESSIVE time-merge and its reverse parse.

Two input forms exist. *Native* streams come from extraction, each at its own rate (Hu 25 Hz, Pi 12.5 Hz,
St 1 Hz). *Aligned* streams hold one pitch and one style unit per HuBERT frame: the form the reverse parse
returns and the form of the release's worked example. Both merge the way the release does (docs/spec.md §2): every
kept unit gets the time ``i / rate`` of its first frame ``i``, and a stable sort by time interleaves the
streams.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .vocab import HUBERT, PITCH, STREAM_BY_PREFIX, STYLE, Stream, SpiritVocab

#: HuBERT's time base in the merge. The release uses 24.99 rather than 25 so that a pitch or style unit
#: given on the same 25 Hz frame grid as a HuBERT unit sorts just *before* that HuBERT unit.
HUBERT_MERGE_RATE = 24.99

_UNIT_TOKEN_RE = re.compile(r"\[(Hu|Pi|St)(\d+)\]")


def as_units(units: Sequence[int] | np.ndarray | str, stream: Stream) -> np.ndarray:
    """Units as an int64 array, checked against the stream's range. Accepts a space-separated string too."""
    if isinstance(units, str):
        units = [int(u) for u in units.split()]
    arr = np.asarray(units, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= stream.count):
        bad = int(arr[(arr < 0) | (arr >= stream.count)][0])
        raise ValueError(f"{stream.name} unit {bad} out of range [0, {stream.count})")
    return arr


def _check_stream(vocab: SpiritVocab, stream: Stream) -> None:
    if stream not in vocab.streams:
        raise ValueError(f"a {vocab.flavor.upper()} vocabulary has no {stream.name} units: use an EXPRESSIVE tokenizer")


def dedup(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse consecutive repeats; return the kept units and the frame index where each run starts."""
    units = np.asarray(units)
    if units.size == 0:
        return units, np.zeros(0, dtype=np.int64)
    keep = np.ones(units.shape[0], dtype=bool)
    keep[1:] = units[1:] != units[:-1]
    idx = np.flatnonzero(keep)
    return units[idx], idx


def stream_string(units, stream: Stream = HUBERT, deduplicate: bool | None = None) -> str:
    """``[Hu3][Hu7]…`` for one stream; deduplicated when the stream is (docs/spec.md §2) unless told otherwise."""
    arr = as_units(units, stream)
    if stream.dedup if deduplicate is None else deduplicate:
        arr, _ = dedup(arr)
    return "".join(f"[{stream.prefix}{u}]" for u in arr.tolist())


def stream_ids(vocab: SpiritVocab, units, stream: Stream = HUBERT, deduplicate: bool | None = None) -> np.ndarray:
    """Token ids of one stream, vectorised: no per-unit Python on the data-building hot path."""
    _check_stream(vocab, stream)
    arr = as_units(units, stream)
    if stream.dedup if deduplicate is None else deduplicate:
        arr, _ = dedup(arr)
    return arr + vocab.stream_offset(stream)


@dataclass(frozen=True)
class MergedUnits:
    """The merged EXPRESSIVE stream: for each token its stream code (0 Hu, 1 Pi, 2 St), unit and start time (s)."""

    stream: np.ndarray
    unit: np.ndarray
    time: np.ndarray

    _STREAMS = (HUBERT, PITCH, STYLE)

    def __len__(self) -> int:
        return int(self.unit.shape[0])

    def ids(self, vocab: SpiritVocab) -> np.ndarray:
        for code in np.unique(self.stream).tolist():
            _check_stream(vocab, self._STREAMS[code])
        offsets = np.array([vocab.stream_offset(s) for s in self._STREAMS], dtype=np.int64)
        return offsets[self.stream] + self.unit

    def string(self) -> str:
        prefixes = [s.prefix for s in self._STREAMS]
        return "".join(f"[{prefixes[s]}{u}]" for s, u in zip(self.stream.tolist(), self.unit.tolist()))

    def slice_time(self, start: float, end: float) -> "MergedUnits":
        """Tokens whose time falls in ``[start, end)``: how a speech span takes its words' units."""
        m = (self.time >= start) & (self.time < end)
        return MergedUnits(self.stream[m], self.unit[m], self.time[m])


def merge_units(
    hubert,
    pitch=None,
    style=None,
    *,
    aligned: bool = False,
    hubert_rate: float = HUBERT_MERGE_RATE,
    pitch_rate: float = PITCH.rate,
    style_rate: float = STYLE.rate,
) -> MergedUnits:
    """Merge HuBERT (deduplicated), pitch (deduplicated) and style units by time, as the release does.

    Native streams (``aligned=False``) sort style, pitch, HuBERT stably by ``i / rate`` with the release's
    rates; style is not deduplicated (one unit per second). Aligned streams (one pitch and style unit per
    HuBERT frame) put pitch and style on the 25 Hz frame grid, deduplicate style too, and order a frame's
    HuBERT unit first only at the very first frame, which reproduces the release's worked example
    ``[St81][Hu78][Pi13][Hu42][Hu81][Hu159][Hu316][Pi3][Hu259]``.
    """
    parts = []  # (stream code, units, frame indices, rate), in concatenation order
    hu, hu_idx = dedup(as_units(hubert, HUBERT))
    if aligned:
        n = len(as_units(hubert, HUBERT))
        for code, stream, units in ((2, STYLE, style), (1, PITCH, pitch)):
            if units is None:
                continue
            arr = as_units(units, stream)
            if len(arr) != n:
                raise ValueError(
                    f"aligned {stream.name} stream has {len(arr)} units for {n} HuBERT frames"
                )
            kept, idx = dedup(arr)
            parts.append((code, kept, idx, HUBERT.rate))
        # Frame 0 is the one tie on the 25 Hz grid: HuBERT goes before pitch there (the release's example).
        parts.insert(1 if style is not None else 0, (0, hu[:1], hu_idx[:1], hubert_rate))
        parts.append((0, hu[1:], hu_idx[1:], hubert_rate))
    else:
        if style is not None:
            arr = as_units(style, STYLE)
            parts.append((2, arr, np.arange(len(arr)), style_rate))
        if pitch is not None:
            kept, idx = dedup(as_units(pitch, PITCH))
            parts.append((1, kept, idx, pitch_rate))
        parts.append((0, hu, hu_idx, hubert_rate))
    native = (HUBERT.rate, HUBERT.rate if aligned else pitch_rate, HUBERT.rate if aligned else style_rate)
    return merge_runs(parts, native)


def merge_runs(parts, native_rates=(HUBERT.rate, PITCH.rate, STYLE.rate)) -> MergedUnits:
    """The merge itself, on streams already reduced to runs: ``parts`` lists ``(stream code, kept units, frame
    index of each, merge rate)`` in concatenation order (style, pitch, HuBERT for the release's order).

    Callers holding deduplicated units with their start frames (the units manifest) use this directly and skip
    expanding runs back to frames. Reported times are true frame starts (``i / native rate`` per stream code);
    the merge rate (24.99 for HuBERT) only orders tokens.
    """
    stream = np.concatenate([np.full(len(u), c, dtype=np.int64) for c, u, _, _ in parts])
    unit = np.concatenate([np.asarray(u, dtype=np.int64) for _, u, _, _ in parts])
    frames = np.concatenate([np.asarray(i, dtype=np.float64) for _, _, i, _ in parts])
    key = np.concatenate([np.asarray(i, dtype=np.float64) / r for _, _, i, r in parts])
    order = np.argsort(key, kind="stable")
    time = frames / np.asarray(native_rates, dtype=np.float64)[stream]
    return MergedUnits(stream[order], unit[order], time[order])


def units_to_string(hubert, pitch=None, style=None, *, aligned: bool = False) -> str:
    """The unit string of a speech segment (no ``[Speech]`` marker): BASE when only HuBERT is given."""
    return merge_units(hubert, pitch, style, aligned=aligned).string()


def string_to_units(text: str) -> dict[str, list[int]]:
    """Reverse of the merge: one entry per HuBERT unit, pitch and style carried forward to each.

    HuBERT units before the first pitch (style) unit take the first pitch (style) unit, as the release's
    decoder does; streams absent from the string are absent from the result. Non-unit text is ignored.
    """
    hubert: list[int] = []
    pitch: list[int | None] = []
    style: list[int | None] = []
    cur = {"Pi": None, "St": None}
    first = {"Pi": None, "St": None}
    for prefix, num in _UNIT_TOKEN_RE.findall(text):
        unit = int(num)
        stream = STREAM_BY_PREFIX[prefix]
        if unit >= stream.count:
            raise ValueError(f"{stream.name} unit {unit} out of range [0, {stream.count}) in {text[:80]!r}")
        if prefix == "Hu":
            hubert.append(unit)
            pitch.append(cur["Pi"])
            style.append(cur["St"])
        else:
            cur[prefix] = unit
            if first[prefix] is None:
                first[prefix] = unit
    out: dict[str, list[int]] = {"hubert": hubert}
    if first["Pi"] is not None:
        out["pitch"] = [first["Pi"] if p is None else p for p in pitch]
    if first["St"] is not None:
        out["style"] = [first["St"] if s is None else s for s in style]
    return out
