"""Units made by the release's own speech tokenizer → this project's units manifest (docs/spec.md §2, §7).

A model fine-tuned from a released checkpoint must see the release's units (mHuBERT-25Hz layer 11 with its
linear quantizer; FCPE pitch VQ-VAE and the wav2vec2 style classifier for EXPRESSIVE). The release's
tokenizer hands them out in two forms, both read here, one JSON object per input line with an ``id``:

- **the units dict** (its ``encode_units``; at the top level or under ``units``): ``hubert``, optionally
  ``pitch`` and ``style``, each a space-separated string (or a list) of frame-level units, not deduplicated,
  and ``audio``, the file's path when it was given one. The streams must cover the same seconds. Frame ``i`` of a stream starts at ``i / rate`` (HuBERT 25 Hz, pitch 12.5 Hz, style
  1 Hz), the times the release's own merge gives them, so the manifest keeps every frame: deduplicated runs
  with their start frames and the stream's frame count, exactly what ``spirit-units extract`` writes.
  (The release orders HuBERT by ``i / 24.99`` when it merges; this project's merge does the same.)
- **the unit string** (its ``encode_string``): ``string``, e.g. ``[St7][Pi15][Hu1][Hu2][Pi20][Hu3]``,
  deduplicated and merged. A string has lost how many frames each unit lasted, so its units are put on the
  earliest frames that reproduce its token order exactly (``merged(flavor).string()`` gives the string back,
  so speech-only sequences are the release's). Times are then not the audio's: such records get
  ``"timing": "order"`` and may not carry a word alignment (``words``/``alignment``); interleaved data
  needs the dict form.

Other fields pass through (``text``, ``speaker``, ``words`` …); ``audio`` becomes ``path``. ``duration`` is
the record's own, else the audio file's when it can be read, else HuBERT frames / 25.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tokenizer.units import HUBERT_MERGE_RATE
from ..tokenizer.vocab import HUBERT, PITCH, STREAM_BY_PREFIX, STYLE
from ..utils.atomic import write_text
from .manifest import StreamUnits, UnitsRecord

#: The release's stream keys, rates and merge rates (HuBERT merges at 24.99, its frames are 25 Hz).
RELEASE_STREAMS = {"hubert": HUBERT, "pitch": PITCH, "style": STYLE}
_MERGE_RATE = {"hubert": HUBERT_MERGE_RATE, "pitch": PITCH.rate, "style": STYLE.rate}
_ORDER = {"style": 0, "pitch": 1, "hubert": 2}  # the merge concatenates style, pitch, HuBERT before its sort
_TOKEN_RE = re.compile(r"\[(Hu|Pi|St)(\d+)\]")
_MARKERS_RE = re.compile(r"\[(?:Speech|SPEECH)\]")


class ReleaseUnitsError(ValueError):
    """A record that is not the release tokenizer's output."""


def _frame_units(value, where: str) -> np.ndarray:
    if isinstance(value, str):
        parts = value.split()
        if not all(p.isdigit() for p in parts):
            bad = next(p for p in parts if not p.isdigit())
            raise ReleaseUnitsError(f"{where}: {bad!r} is not a unit number")
        return np.array([int(p) for p in parts], dtype=np.int64)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return np.array(value, dtype=np.int64)
    raise ReleaseUnitsError(f"{where}: expected a space-separated string or a list of integers")


def streams_from_dict(d: dict, where: str) -> dict[str, StreamUnits]:
    """The units dict's streams at their native rates, every frame kept."""
    if "hubert" not in d:
        raise ReleaseUnitsError(f"{where}: no 'hubert' units (nor a 'string')")
    if "style" in d and "pitch" not in d:
        raise ReleaseUnitsError(f"{where}: style units without pitch units (the release emits style only with pitch)")
    out = {}
    for name, stream in RELEASE_STREAMS.items():
        if name in d:
            out[name] = StreamUnits.from_frames(_frame_units(d[name], f"{where} {name}"), stream.rate, stream)
    # The streams cover the same audio: a stream of another length is a swapped key or a cut record.
    seconds = {n: su.frames / su.rate for n, su in out.items()}
    for name, slack in (("pitch", 0.5), ("style", 1.5)):
        if name in seconds and abs(seconds[name] - seconds["hubert"]) > slack + 0.01 * seconds["hubert"]:
            raise ReleaseUnitsError(f"{where}: {out[name].frames} {name} units ({seconds[name]:g} s at "
                                    f"{out[name].rate:g} Hz) do not cover the {out['hubert'].frames} HuBERT frames "
                                    f"({seconds['hubert']:g} s at 25 Hz)")
    return out


def streams_from_string(s: str, where: str) -> dict[str, StreamUnits]:
    """Units on the earliest frames whose merge order is the string's token order."""
    body = _MARKERS_RE.sub("", s)
    tokens = _TOKEN_RE.findall(body)
    if _TOKEN_RE.sub("", body).strip():
        raise ReleaseUnitsError(f"{where}: the string holds something other than unit tokens: "
                                f"{_TOKEN_RE.sub('', body).strip()[:40]!r}")
    if not tokens:
        raise ReleaseUnitsError(f"{where}: the string holds no unit token")
    units: dict[str, list[int]] = {"hubert": [], "pitch": [], "style": []}
    starts: dict[str, list[int]] = {"hubert": [], "pitch": [], "style": []}
    key, order = -1.0, -1
    for prefix, num in tokens:
        stream = STREAM_BY_PREFIX[prefix]
        name = stream.name
        rate = _MERGE_RATE[name]
        if stream.dedup and units[name] and units[name][-1] == int(num):
            raise ReleaseUnitsError(f"{where}: {stream.token(int(num))} repeats the previous {name} unit: the "
                                    "release's strings are deduplicated, so this is not one")
        f = starts[name][-1] + 1 if starts[name] else 0
        f = max(f, math.floor(max(key, 0.0) * rate) - 1)
        while f / rate < key or (f / rate == key and _ORDER[name] <= order):
            f += 1
        key, order = f / rate, _ORDER[name]
        units[name].append(int(num))
        starts[name].append(f)
    if not units["hubert"]:
        raise ReleaseUnitsError(f"{where}: the string holds no HuBERT unit")
    out = {}
    for name, stream in RELEASE_STREAMS.items():
        if units[name]:
            st = np.array(starts[name], dtype=np.int64)
            out[name] = StreamUnits(np.array(units[name], dtype=np.int64), st, int(st[-1]) + 1, stream.rate)
    return out


@dataclass(frozen=True)
class ImportSummary:
    records: int
    from_dict: int
    from_string: int
    out: str


def import_record(d: dict, where: str) -> UnitsRecord:
    if not isinstance(d, dict):
        raise ReleaseUnitsError(f"{where}: not a JSON object")
    d = dict(d)
    rid = d.pop("id", None)
    if rid is None:
        raise ReleaseUnitsError(f"{where}: record has no 'id'")
    where = f"{where} record {rid!r}"
    if "units" in d:  # the units dict nested as {"id": …, "units": encode_units(…)}
        nested = d.pop("units")
        if not isinstance(nested, dict) or any(isinstance(v, dict) for v in nested.values()):
            raise ReleaseUnitsError(f"{where}: its 'units' are not the release's units dict (this project's "
                                    "manifest already?): give hubert/pitch/style as frame-level units, or a 'string'")
        clash = sorted(set(nested) & set(d))
        if clash:
            raise ReleaseUnitsError(f"{where}: {', '.join(clash)} both in 'units' and at the top level")
        d.update(nested)
    extra = {k: v for k, v in d.items() if k not in ("hubert", "pitch", "style", "string", "audio", "duration")}
    if "string" in d:
        if any(k in d for k in RELEASE_STREAMS):
            raise ReleaseUnitsError(f"{where}: give the units dict or the string, not both")
        if "words" in d or "alignment" in d:
            raise ReleaseUnitsError(f"{where}: a unit string has lost its units' durations, so a word alignment "
                                    "cannot be matched to it; import the release's units dict instead")
        if not isinstance(d["string"], str):
            raise ReleaseUnitsError(f"{where}: 'string' is not a string")
        streams = streams_from_string(d["string"], where)
        extra["timing"] = "order"
    else:
        streams = streams_from_dict(d, where)
    if "audio" in d:
        extra.setdefault("path", d["audio"])
    duration = d.get("duration")
    if duration is None and "string" not in d and isinstance(extra.get("path"), str):
        try:
            from .audio import audio_duration

            duration = audio_duration(extra["path"])
        except Exception:  # noqa: BLE001 - an unreadable or absent file just means: use the frames
            duration = None
    if duration is None:
        duration = streams["hubert"].frames / HUBERT.rate
    rec = UnitsRecord(str(rid), float(duration), streams, extra)
    try:  # the manifest reader's checks (ranges, starts): what pack and build will apply
        return UnitsRecord.from_json(rec.to_json(), where)
    except ValueError as e:
        raise ReleaseUnitsError(str(e)) from e


def import_release_units(inputs: list[str | Path], out: str | Path) -> ImportSummary:
    """Read release-format records from JSONL files, write one units manifest (atomically)."""
    lines, seen, n_dict, n_str = [], set(), 0, 0
    for path in inputs:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReleaseUnitsError(f"{where}: not JSON ({e})") from e
            rec = import_record(d, where)
            if rec.id in seen:
                raise ReleaseUnitsError(f"{where}: duplicate id {rec.id!r}")
            seen.add(rec.id)
            n_str += "string" in d
            n_dict += "string" not in d
            lines.append(rec.to_json())
    if not lines:
        raise ReleaseUnitsError(f"no records in {', '.join(map(str, inputs))}")
    write_text(out, "".join(x + "\n" for x in lines))
    return ImportSummary(len(lines), n_dict, n_str, str(out))
