"""Benchmark readers for the released layouts (docs/spec.md §5). Each returns a :class:`Benchmark`: the wavs it
needs (utterance id → path, what ``spirit-eval units`` extracts) and its items for every modality it supports.

* ZeroSpeech 2021 ``lexical/`` (sWUGGY) and ``syntactic/`` (sBLIMP): ``<split>/*.wav`` + ``<split>/gold.csv``
  with the published columns; the two members of a pair share ``id`` and ``voice``, ``correct`` says which is
  the real word / grammatical sentence. Text versions use the ``word`` / ``transcription`` column.
* Spoken (topic-)StoryCloze as slamkit reads it: ``<int>_…wav`` files, two per integer, the correct story first.
  slamkit orders the files only by the integer; here the pair is ordered by name, unless the stems say which is
  which (a ``_``-separated token ``correct``/``incorrect``, ``pos``/``neg``, ``true``/``false``). Wavs may sit in
  the root or in subfolders (slamkit's ``subfolder`` form).
* The cross-modal release: ``X_mutual``, ``X_correct``, ``X_incorrect`` as ``.wav`` and ``.txt``; gives the text
  (T), speech-with-context (S), T→S and S→T versions.
* Few-shot sets (no two-way items, a label per utterance): LibriSpeech's layout
  (``SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` lines ``ID TEXT`` beside ``ID.flac``/``.wav``) for ASR and TTS;
  for intent classification, which the paper does not name a release of, a folder of wavs with ``labels.csv``
  (columns ``filename,label``; ``filename`` without extension).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from .prompts import Item, Segment

LEXICAL_COLUMNS = ("filename", "id", "voice", "frequency", "word", "phones", "length", "correct")
SYNTACTIC_COLUMNS = ("filename", "type", "subtype", "id", "voice", "transcription", "correct")
BENCHMARKS = ("swuggy", "sblimp", "ssc", "tsc", "cm-ssc", "cm-tsc", "librispeech", "intents")


class BenchmarkError(ValueError):
    """Malformed benchmark files; the message names the file and the item."""


@dataclass
class Benchmark:
    name: str
    root: Path
    #: Utterance id → wav path: what unit extraction has to cover.
    audio: dict[str, Path]
    #: Modality code (T, S, T2S, S2T) → items.
    items: dict[str, list[Item]] = field(default_factory=dict)
    #: ``lexical`` / ``syntactic`` for the ZeroSpeech sets (their aggregation and submission files), else None.
    zerospeech: str | None = None
    split: str | None = None
    #: Few-shot sets: utterance id → its transcript (LibriSpeech) or intent label.
    labels: dict[str, str] = field(default_factory=dict)


def _read_gold(path: Path, columns: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise BenchmarkError(f"{path}: gold file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(f"{path}: missing gold columns {missing} (has {reader.fieldnames}; expected "
                                 f"{','.join(columns)})")
        rows = list(reader)
    if not rows:
        raise BenchmarkError(f"{path}: no rows")
    return rows


def read_zerospeech(root: str | Path, kind: str, split: str = "dev") -> Benchmark:
    """``root`` is the ``lexical`` / ``syntactic`` folder (or the dataset root holding it)."""
    if kind not in ("lexical", "syntactic"):
        raise ValueError(f"ZeroSpeech kind must be lexical or syntactic, got {kind!r}")
    root = Path(root)
    if (root / kind / split).is_dir():
        root = root / kind
    folder = root / split
    gold_path = folder / "gold.csv"
    columns = LEXICAL_COLUMNS if kind == "lexical" else SYNTACTIC_COLUMNS
    rows = _read_gold(gold_path, columns)
    text_col = "word" if kind == "lexical" else "transcription"
    pairs: dict[tuple[str, str], dict[int, dict]] = {}
    audio: dict[str, Path] = {}
    for n, r in enumerate(rows, start=2):
        where = f"{gold_path}:{n} (filename {r['filename']!r})"
        if r["correct"] not in ("0", "1"):
            raise BenchmarkError(f"{where}: 'correct' must be 0 or 1, got {r['correct']!r}")
        wav = folder / f"{r['filename']}.wav"
        if not wav.is_file():
            raise BenchmarkError(f"{where}: listed wav {wav} is absent")
        if r["filename"] in audio:
            raise BenchmarkError(f"{where}: filename listed twice")
        audio[r["filename"]] = wav
        slot = pairs.setdefault((r["id"], r["voice"]), {})
        c = int(r["correct"])
        if c in slot:
            raise BenchmarkError(f"{where}: pair id {r['id']!r} voice {r['voice']!r} has two "
                                 f"{'correct' if c else 'incorrect'} members ({slot[c]['filename']!r} too)")
        slot[c] = r
    items_s, items_t = [], []
    for (pid, voice), slot in pairs.items():
        if len(slot) != 2:
            (only,) = slot.values()
            raise BenchmarkError(f"{gold_path}: pair id {pid!r} voice {voice!r} is unpaired (only "
                                 f"{only['filename']!r}, correct={only['correct']})")
        good, bad = slot[1], slot[0]
        meta = {"id": pid, "voice": voice}
        if kind == "lexical":
            meta |= {"frequency": int(good["frequency"]) if good["frequency"] not in ("", "NA") else 0,
                     "length": good["length"], "word": good["word"], "nonword": bad["word"]}
        else:
            meta |= {"type": good["type"], "subtype": good["subtype"]}
        names = (good["filename"], bad["filename"])
        key = f"{pid}/{voice}"
        items_s.append(Item(key, (), ((Segment("speech", names[0]),), (Segment("speech", names[1]),)), 0, names,
                            meta))
        items_t.append(Item(key, (), ((Segment("text", good[text_col]),), (Segment("text", bad[text_col]),)), 0,
                            names, meta))
    return Benchmark("swuggy" if kind == "lexical" else "sblimp", root, audio, {"S": items_s, "T": items_t},
                     kind, split)


_LEADING_INT = re.compile(r"^(\d+)_")
_GOOD, _BAD = {"correct", "pos", "positive", "true"}, {"incorrect", "neg", "negative", "false"}


def _pair_order(a: Path, b: Path) -> tuple[Path, Path]:
    ta, tb = set(a.stem.lower().split("_")), set(b.stem.lower().split("_"))
    if ta & _GOOD and tb & _BAD:
        return a, b
    if tb & _GOOD and ta & _BAD:
        return b, a
    return (a, b) if a.name <= b.name else (b, a)


def read_story_pairs(root: str | Path, name: str = "ssc") -> Benchmark:
    """slamkit's StoryCloze layout: one wav per whole story, ``<int>_…wav`` pairs, correct first."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: benchmark folder not found")
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    audio: dict[str, Path] = {}
    items = []
    for folder in folders:
        groups: dict[int, list[Path]] = {}
        for wav in sorted(folder.glob("*.wav")):
            m = _LEADING_INT.match(wav.name)
            if not m:
                raise BenchmarkError(f"{wav}: StoryCloze wav names start with '<int>_'")
            groups.setdefault(int(m.group(1)), []).append(wav)
        for k in sorted(groups):
            files = groups[k]
            if len(files) != 2:
                raise BenchmarkError(f"{folder}: story {k} has {len(files)} wavs "
                                     f"({', '.join(f.name for f in files)}); expected a correct/incorrect pair")
            good, bad = _pair_order(*files)
            ids = tuple(str(f.relative_to(root).with_suffix("")) for f in (good, bad))
            for uid, f in zip(ids, (good, bad)):
                audio[uid] = f
            key = str(k) if folder == root else f"{folder.relative_to(root).as_posix()}/{k}"
            items.append(Item(key, (), ((Segment("speech", ids[0]),), (Segment("speech", ids[1]),)), 0, ids))
    if not items:
        raise BenchmarkError(f"{root}: no '<int>_…wav' story pairs found")
    return Benchmark(name, root, audio, {"S": items})


def read_cross_modal(root: str | Path, name: str = "cm-tsc") -> Benchmark:
    """``X_mutual / X_correct / X_incorrect`` as ``.wav`` + ``.txt``: context and endings apart."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: benchmark folder not found")
    stems = sorted({p.relative_to(root).with_suffix("").as_posix()[: -len("_mutual")]
                    for p in root.rglob("*_mutual.*")})
    if not stems:
        raise BenchmarkError(f"{root}: no '*_mutual.wav/.txt' files found")
    audio: dict[str, Path] = {}
    texts: dict[str, str] = {}
    for stem in stems:
        for part in ("mutual", "correct", "incorrect"):
            uid = f"{stem}_{part}"
            for ext in ("wav", "txt"):
                p = root / f"{uid}.{ext}"
                if not p.is_file():
                    raise BenchmarkError(f"{root}: story {stem!r} lacks {p.name}")
            audio[uid] = root / f"{uid}.wav"
            texts[uid] = (root / f"{uid}.txt").read_text(encoding="utf-8").strip()
            if not texts[uid]:
                raise BenchmarkError(f"{root / (uid + '.txt')}: empty text")
    out: dict[str, list[Item]] = {"T": [], "S": [], "T2S": [], "S2T": []}
    for stem in stems:
        ids = (f"{stem}_correct", f"{stem}_incorrect")
        ctx = f"{stem}_mutual"
        for code, cm, em in (("T", "text", "text"), ("S", "speech", "speech"), ("T2S", "text", "speech"),
                             ("S2T", "speech", "text")):
            c = Segment(cm, texts[ctx] if cm == "text" else ctx)
            cands = tuple((Segment(em, texts[u] if em == "text" else u),) for u in ids)
            out[code].append(Item(stem, (c,), cands, 0, ids))
    return Benchmark(name, root, audio, out)


def read_librispeech(root: str | Path) -> Benchmark:
    """Every ``*.trans.txt`` under ``root`` (one split's folder, e.g. ``LibriSpeech/test-clean``)."""
    root = Path(root)
    trans = sorted(root.rglob("*.trans.txt"))
    if not trans:
        raise BenchmarkError(f"{root}: no '*.trans.txt' files (expected LibriSpeech's SPEAKER/CHAPTER layout)")
    audio: dict[str, Path] = {}
    labels: dict[str, str] = {}
    for t in trans:
        for n, line in enumerate(t.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            wav = next((t.parent / f"{uid}.{ext}" for ext in ("flac", "wav") if (t.parent / f"{uid}.{ext}").is_file()),
                       None)
            if wav is None or not text.strip():
                raise BenchmarkError(f"{t}:{n}: utterance {uid!r} has " + ("no text" if wav else "no .flac/.wav"))
            audio[uid], labels[uid] = wav, text.strip()
    return Benchmark("librispeech", root, audio, labels=labels)


def read_intents(root: str | Path) -> Benchmark:
    """``labels.csv`` (``filename,label``) and the wavs it names."""
    root = Path(root)
    rows = _read_gold(root / "labels.csv", ("filename", "label"))
    audio: dict[str, Path] = {}
    labels: dict[str, str] = {}
    for n, r in enumerate(rows, start=2):
        wav = root / f"{r['filename']}.wav"
        if not wav.is_file() or not r["label"].strip():
            raise BenchmarkError(f"{root / 'labels.csv'}:{n}: " + (f"{wav} is absent" if not wav.is_file()
                                                                   else "empty label"))
        audio[r["filename"]], labels[r["filename"]] = wav, r["label"].strip()
    return Benchmark("intents", root, audio, labels=labels)


def read_benchmark(name: str, root: str | Path, split: str = "dev") -> Benchmark:
    if name == "swuggy":
        return read_zerospeech(root, "lexical", split)
    if name == "sblimp":
        return read_zerospeech(root, "syntactic", split)
    if name in ("ssc", "tsc"):
        return read_story_pairs(root, name)
    if name in ("cm-ssc", "cm-tsc"):
        return read_cross_modal(root, name)
    if name == "librispeech":
        return read_librispeech(root)
    if name == "intents":
        return read_intents(root)
    raise ValueError(f"unknown benchmark {name!r}: expected one of {', '.join(BENCHMARKS)}")
