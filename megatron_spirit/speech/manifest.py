"""The units manifest: the contract between unit extraction and dataset building.

One JSON object per line::

    {"id": "utt1", "duration": 3.52,
     "units": {"hubert": {"rate": 25.0, "units": [12, 7, 12], "starts": [0, 3, 4], "frames": 88},
               "pitch":  {"rate": 12.5, "units": [...], "starts": [...], "frames": 44},
               "style":  {"rate": 1.0,  "units": [...], "starts": [...], "frames": 4}},
     ...any input fields passed through (speaker, text, alignment, ...)}

Streams that deduplicate (docs/spec.md §2) store each run once with the frame index where it starts (``starts``);
``frames`` is the stream's frame count, so the frame-level stream is recoverable and every unit has a start time.
Frame ``i`` of a stream at ``rate`` Hz covers ``[i / rate, (i + 1) / rate)`` seconds: :func:`frame_span`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tokenizer.units import HUBERT_MERGE_RATE, MergedUnits, dedup, merge_runs
from ..tokenizer.vocab import HUBERT, STREAMS, Stream

_BY_NAME = {s.name: s for s in STREAMS}


def frame_span(i, rate: float):
    """Start and end time (s) of frame ``i`` at ``rate`` Hz: the frame-timing convention, in one place."""
    return i / rate, (i + 1) / rate


def _integers(values, what: str) -> np.ndarray:
    """``values`` as int64, refusing a fractional value (``np.asarray(..., int64)`` would truncate ``3.7`` to 3)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False).reshape(-1)
    arr = np.asarray(values).reshape(-1)
    if arr.size and arr.dtype.kind not in "iuf":
        raise ValueError(f"{what} values are not integers ({arr.dtype})")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            raise ValueError(f"{what} {arr[bad[0]].item()!r} (position {int(bad[0])}) is not an integer")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class StreamUnits:
    """One stream of one utterance: kept units, the frame each starts at, the stream's frame count and rate."""

    units: np.ndarray
    starts: np.ndarray
    frames: int
    rate: float

    @classmethod
    def from_frames(cls, frame_units, rate: float, stream: Stream) -> "StreamUnits":
        arr = np.asarray(frame_units, dtype=np.int64).reshape(-1)
        if stream.dedup:
            units, starts = dedup(arr)
        else:
            units, starts = arr, np.arange(len(arr), dtype=np.int64)
        return cls(units, starts.astype(np.int64), int(len(arr)), float(rate))

    def runs(self, stream: Stream) -> "StreamUnits":
        """Consecutive equal units joined into one run for a deduplicating stream (input written by other tools
        may hold repeats; ours never does)."""
        if not stream.dedup or len(self.units) < 2:
            return self
        keep = np.ones(len(self.units), dtype=bool)
        keep[1:] = self.units[1:] != self.units[:-1]
        if keep.all():
            return self
        return StreamUnits(self.units[keep], self.starts[keep], self.frames, self.rate)

    def frame_level(self) -> np.ndarray:
        """The stream with its repeats restored (one unit per frame)."""
        ends = np.append(self.starts[1:], self.frames)
        return np.repeat(self.units, ends - self.starts)

    def start_times(self) -> np.ndarray:
        return self.starts / self.rate

    def to_json(self) -> dict:
        return {"rate": self.rate, "units": self.units.tolist(), "starts": self.starts.tolist(), "frames": self.frames}

    @classmethod
    def from_json(cls, d: dict, where: str = "") -> "StreamUnits":
        try:
            units = _integers(d["units"], f"{where}: unit")
            starts = _integers(d.get("starts", range(len(units))), f"{where}: start frame")
            frames = int(d.get("frames", len(units)))
            rate = float(d["rate"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: malformed stream record ({e})") from e
        except ValueError as e:
            raise ValueError(str(e) if "not an integer" in str(e) else f"{where}: malformed stream record ({e})") from e
        if len(starts) != len(units):
            raise ValueError(f"{where}: {len(units)} units but {len(starts)} start frames")
        if len(starts) and (np.any(np.diff(starts) <= 0) or starts[0] < 0 or starts[-1] >= frames):
            raise ValueError(f"{where}: start frames must increase within [0, {frames})")
        return cls(units, starts, frames, rate)


@dataclass(frozen=True)
class UnitsRecord:
    """One utterance of the units manifest."""

    id: str
    duration: float
    streams: dict[str, StreamUnits]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = {"id": self.id, "duration": round(self.duration, 6),
             "units": {k: v.to_json() for k, v in self.streams.items()}}
        d.update(self.extra)
        return json.dumps(d, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | dict, where: str = "") -> "UnitsRecord":
        d = json.loads(line) if isinstance(line, str) else dict(line)
        rid = d.pop("id", None)
        if rid is None:
            raise ValueError(f"{where}: record has no 'id'")
        where = f"{where} record {rid!r}" if where else f"record {rid!r}"
        units = d.pop("units", None)
        if not isinstance(units, dict) or "hubert" not in units:
            raise ValueError(f"{where}: no 'units' with a 'hubert' stream")
        streams = {}
        for name, sd in units.items():
            if name not in _BY_NAME:
                raise ValueError(f"{where}: unknown unit stream {name!r}")
            su = StreamUnits.from_json(sd, f"{where} stream {name}")
            stream = _BY_NAME[name]
            if su.units.size and (su.units.min() < 0 or su.units.max() >= stream.count):
                raise ValueError(f"{where}: {name} unit out of range [0, {stream.count})")
            streams[name] = su
        return cls(str(rid), float(d.pop("duration", 0.0)), streams, d)

    def merged(self, flavor: str) -> MergedUnits:
        """The token stream of this utterance for a flavor: HuBERT only (base) or the time-merge (expressive)."""
        hu = self.streams["hubert"].runs(HUBERT)
        if flavor == "base":
            return merge_runs([(0, hu.units, hu.starts, HUBERT_MERGE_RATE)])
        missing = [s for s in ("pitch", "style") if s not in self.streams]
        if missing:
            raise ValueError(f"record {self.id!r}: expressive flavor needs {' and '.join(missing)} units")
        pi, st = self.streams["pitch"].runs(_BY_NAME["pitch"]), self.streams["style"]
        # Runs straight from the manifest (no expansion to frames): style, pitch, HuBERT as the release orders them.
        return merge_runs([(2, st.units, st.starts, st.rate), (1, pi.units, pi.starts, pi.rate),
                           (0, hu.units, hu.starts, HUBERT_MERGE_RATE)], (HUBERT.rate, pi.rate, st.rate))
