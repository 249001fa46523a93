"""Word alignments from where users have them (MFA TextGrid, NeMo-style CTM, JSON word lists) → one form.

Every reader returns :class:`Alignment`: the words (normalised: lower case, no punctuation, docs/spec.md §3) with their
start/end seconds. Non-words that aligners write (silences ``""``/``sil``/``sp``, CTM blanks ``<b>``, ``<eps>``)
are dropped. :func:`check_alignment` is where bad alignments are caught (times beyond the audio, times running
backwards, words that differ from the transcript), so the interleaver can trust what it gets.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

#: Tokens aligners emit for silence, noise or CTC blanks: not words of the transcript.
NON_WORDS = frozenset({"", "sil", "sp", "spn", "<sil>", "<b>", "<eps>", "<blank>", "<unk>", "[sil]"})
#: Slack (s) for a word's end past the audio's duration: one HuBERT frame plus rounding in aligners' output.
END_TOLERANCE = 0.05
#: Slack (s) for a word starting before the previous one ends: half a 25 Hz frame, i.e. aligners' rounding to
#: 10-20 ms frames. A larger overlap means the aligner (or a hand edit) got the words wrong.
OVERLAP_TOLERANCE = 0.02


class AlignmentError(ValueError):
    """An alignment that cannot be used; the message says why (it goes to the rejects file)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _slow_normalize(word: str) -> str:
    kept = "".join(ch for ch in word if ch == "'" or not unicodedata.category(ch).startswith(("P", "S", "C")))
    return kept.strip("'").strip()


#: ASCII punctuation and symbols except the apostrophe: deleted by one C-level translate.
_ASCII_PUNCT = str.maketrans("", "", "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum() and chr(c) != "'"))


def normalize_word(word: str) -> str:
    """Lower case, punctuation and symbols removed (apostrophes inside a word kept: ``don't``).

    The common cases (plain words, ASCII punctuation) stay in C string methods; other characters take the
    Unicode-category path.
    """
    w = word.lower()
    if w.isalnum():
        return w
    w = w.translate(_ASCII_PUNCT)
    if w.replace("'", "").isalnum() or not w:
        return w.strip("'")
    return _slow_normalize(w)


def normalize_words(words: Sequence[str]) -> list[str]:
    """:func:`normalize_word` of each word, with the common case done on all words at once by C string methods.

    Empty results stay in place (the caller drops them), so the output aligns with the input.
    """
    sep = "\x1f"  # a control character: deleted nowhere, absent from words
    joined = sep.join(words).lower()
    joined = joined.translate(_ASCII_PUNCT)
    out = joined.split(sep)
    if len(out) != len(words):  # a word held the separator: take the per-word path
        return [normalize_word(w) for w in words]
    if joined.replace(sep, "").isalnum():  # every word is plain (or empty): done
        return out
    return [w if not w or w.isalnum() else normalize_word(w) for w in out]


_NON_WORDS_NORMALISED = frozenset(normalize_word(w) for w in NON_WORDS) - {""}


def normalize_text(text: str) -> list[str]:
    """A transcript as normalised words: split on white space, then :func:`normalize_word`; empties dropped."""
    return [w for w in normalize_words(text.split()) if w]


@dataclass(frozen=True)
class Alignment:
    """Words with start/end times in seconds, in order."""

    words: tuple[str, ...]
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[str, float, float]]) -> "Alignment":
        """Normalise each word and drop non-words; keep times as given."""
        triples = list(triples)
        times = np.array([(s, e) for _, s, e in triples], dtype=np.float64).reshape(-1, 2)
        return cls.from_words([w for w, _, _ in triples], times)

    @classmethod
    def from_words(cls, raw: Sequence[str], times: np.ndarray) -> "Alignment":
        """Raw words and their ``(start, end)`` rows → normalised words, non-words dropped."""
        words = normalize_words(raw)
        keep = [i for i, w in enumerate(words) if w and (w not in _NON_WORDS_NORMALISED
                                                         or raw[i].strip().lower() not in NON_WORDS)]
        if len(keep) == len(words):
            return cls(tuple(words), times[:, 0].copy(), times[:, 1].copy())
        times = times[keep]
        return cls(tuple(words[i] for i in keep), times[:, 0].copy(), times[:, 1].copy())


def check_alignment(al: Alignment, duration: float | None, transcript: str | None = None) -> None:
    """Raise :class:`AlignmentError` when the alignment cannot be trusted for interleaving."""
    if len(al) == 0:
        raise AlignmentError("empty_alignment", "the alignment holds no words")
    if np.any(~np.isfinite(al.starts)) or np.any(~np.isfinite(al.ends)):
        raise AlignmentError("bad_times", "word times are not finite numbers")
    if np.any(al.starts < 0) or np.any(al.ends < al.starts):
        i = int(np.flatnonzero((al.starts < 0) | (al.ends < al.starts))[0])
        raise AlignmentError("bad_times", f"word {i} {al.words[i]!r} has start {al.starts[i]} end {al.ends[i]}")
    if np.any(np.diff(al.starts) < 0):
        i = int(np.flatnonzero(np.diff(al.starts) < 0)[0]) + 1
        raise AlignmentError("bad_times", f"word {i} {al.words[i]!r} starts before the word preceding it")
    overlap = al.ends[:-1] - al.starts[1:]
    if np.any(overlap > OVERLAP_TOLERANCE):
        i = int(np.flatnonzero(overlap > OVERLAP_TOLERANCE)[0]) + 1
        raise AlignmentError(
            "overlapping_words",
            f"word {i} {al.words[i]!r} starts at {al.starts[i]:.3f} s, before word {i - 1} {al.words[i - 1]!r} "
            f"ends at {al.ends[i - 1]:.3f} s (more than {OVERLAP_TOLERANCE * 1000:.0f} ms of overlap)",
        )
    if duration is not None and al.ends[-1] > duration + END_TOLERANCE:
        raise AlignmentError(
            "times_beyond_audio", f"last word ends at {al.ends[-1]:.3f} s, the audio lasts {duration:.3f} s"
        )
    if transcript is not None:
        got = list(al.words)
        split = transcript.split()
        want = got if split == got else normalize_text(transcript)  # already normalised: nothing to redo
        if want != got:
            i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            a = got[i] if i < len(got) else "<end>"
            b = want[i] if i < len(want) else "<end>"
            raise AlignmentError(
                "alignment_mismatch",
                f"word {i} is {a!r} in the alignment but {b!r} in the transcript "
                f"({len(got)} vs {len(want)} words)",
            )


# Readers ---------------------------------------------------------------------------------------------------
def parse_word_list(obj, where: str = "") -> Alignment:
    """A JSON word list: ``[{"word": w, "start": s, "end": e}, ...]`` (``text``/``w`` also accepted for the
    word) or ``[[w, s, e], ...]``; a dict with a ``words`` list is unwrapped."""
    if isinstance(obj, Mapping):
        obj = obj.get("words", obj.get("alignment"))
    if not isinstance(obj, list):
        raise AlignmentError("bad_alignment", f"{where}: expected a list of words with start/end times")
    try:
        if obj and isinstance(obj[0], Mapping):
            key = "word" if "word" in obj[0] else "text" if "text" in obj[0] else "w"
            raw = [d[key] for d in obj]
            times = np.array([(d["start"], d["end"]) for d in obj], dtype=np.float64)
        else:
            raw = [w for w, _, _ in obj]
            times = np.array([(s, e) for _, s, e in obj], dtype=np.float64).reshape(-1, 2)
        "".join(raw)  # TypeError (in C) when a word is not a string
    except (KeyError, TypeError, ValueError) as e:
        k = next((i for i, item in enumerate(obj) if not _word_entry_ok(item)), "?")
        raise AlignmentError("bad_alignment", f"{where}: word entry {k} is malformed ({e!r})") from e
    return Alignment.from_words(raw, times)


def _word_entry_ok(item) -> bool:
    try:
        if isinstance(item, Mapping):
            w, s, e = item.get("word", item.get("text", item.get("w"))), item["start"], item["end"]
        else:
            w, s, e = item
        float(s), float(e)
        return isinstance(w, str)
    except (KeyError, TypeError, ValueError):
        return False


_TG_ITEM = re.compile(r'^\s*item\s*\[\d+\]\s*:', re.M)
_TG_FIELD = re.compile(r'^\s*(name|class|xmin|xmax|text)\s*=\s*(".*"|\S+)\s*$', re.M)
#: A token of Praat's short text format: a string (quotes doubled inside, may span lines) or a bare word/number.
_TG_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(\S+)')


def read_text_file(path: str | os.PathLike) -> str:
    """Text as Praat and aligners save it: UTF-8 (with or without BOM) or UTF-16 with its BOM (Praat's choice
    for non-ASCII TextGrids); anything else is an error naming the file and byte."""
    raw = Path(path).read_bytes()
    try:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AlignmentError("bad_alignment", f"{path}: not UTF-8 or UTF-16 text (byte {e.start}: {e.reason})") from e


def read_textgrid(path: str | os.PathLike, tier: str = "words") -> Alignment:
    """A Praat TextGrid in the long (what MFA writes) or short text format; the ``words`` tier, else the first
    interval tier."""
    text = read_text_file(path)
    if "ooTextFile" not in text[:200]:
        raise AlignmentError("bad_alignment", f"{path}: not a Praat TextGrid (no ooTextFile header)")
    tiers = _long_textgrid_tiers(text) if re.search(r"^\s*xmin\s*=", text, re.M) else _short_textgrid_tiers(text, path)
    if not tiers:
        raise AlignmentError("bad_alignment", f"{path}: no interval tier")
    chosen = next((iv for name, iv in tiers if name == tier), tiers[0][1])
    return Alignment.from_triples(chosen)


def _unquote(value: str) -> str:
    return value[1:-1].replace('""', '"') if value.startswith('"') else value  # Praat doubles inner quotes


def _long_textgrid_tiers(text: str) -> list[tuple[str, list[tuple[str, float, float]]]]:
    tiers = []
    for block in _TG_ITEM.split(text)[1:]:
        fields = _TG_FIELD.findall(block)
        head = {k: v.strip('"') for k, v in fields[:4]}
        if head.get("class") != "IntervalTier":
            continue
        intervals, cur = [], {}
        for key, value in fields[4:]:
            cur[key] = value
            if key == "text":
                intervals.append((_unquote(value), float(cur["xmin"]), float(cur["xmax"])))
                cur = {}
        tiers.append((head.get("name", ""), intervals))
    return tiers


def _short_textgrid_tiers(text: str, path) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """Praat's short format: after the header, ``xmin xmax <exists> n`` then per tier ``class name xmin xmax n``
    and n items (interval tiers: ``xmin xmax text``; point tiers: ``time mark``)."""
    toks = [(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2), m.group(1) is not None)
            for m in _TG_TOKEN.finditer(text)]
    try:
        k = [i for i, (t, quoted) in enumerate(toks) if quoted][1] + 1  # past "ooTextFile" and "TextGrid"
        if toks[k + 2][0] != "<exists>":
            return []
        n_tiers, k = int(toks[k + 3][0]), k + 4
        tiers = []
        for _ in range(n_tiers):
            cls, name, n = toks[k][0], toks[k + 1][0], int(toks[k + 4][0])
            k += 5
            width = 3 if cls == "IntervalTier" else 2
            items = toks[k:k + width * n]
            if len(items) < width * n:
                raise IndexError("tier ends early")
            if cls == "IntervalTier":
                tiers.append((name, [(items[j + 2][0], float(items[j][0]), float(items[j + 1][0]))
                                     for j in range(0, len(items), 3)]))
            k += width * n
    except (IndexError, ValueError) as e:
        raise AlignmentError("bad_alignment", f"{path}: malformed short-format TextGrid ({e})") from e
    return tiers


def read_ctm(path: str | os.PathLike) -> dict[str, Alignment]:
    """A CTM file (``utt channel start duration word [confidence ...]``, as NeMo's aligner writes) → per utterance."""
    per_utt: dict[str, list[tuple[str, float, float]]] = {}
    for n, line in enumerate(read_text_file(path).splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith(";;"):
            continue
        if len(parts) < 5:
            raise AlignmentError("bad_alignment", f"{path}:{n}: expected 'utt channel start dur word'")
        try:
            start, dur = float(parts[2]), float(parts[3])
        except ValueError as e:
            raise AlignmentError("bad_alignment", f"{path}:{n}: bad start/duration ({e})") from e
        per_utt.setdefault(parts[0], []).append((parts[4], start, start + dur))
    return {utt: Alignment.from_triples(sorted(t, key=lambda x: x[1])) for utt, t in per_utt.items()}


def read_json_alignments(path: str | os.PathLike) -> dict[str, Alignment]:
    """JSON (``{id: word list}`` or a list of ``{"id", "words"}``) or JSONL (one ``{"id", "words"}`` a line)."""
    path = Path(path)
    out: dict[str, Alignment] = {}
    text = read_text_file(path)
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                d = json.loads(line)
                out[str(d["id"])] = parse_word_list(d, f"{path}:{n}")
        return out
    data = json.loads(text)
    items = data.items() if isinstance(data, Mapping) else ((d["id"], d) for d in data)
    for rid, words in items:
        out[str(rid)] = parse_word_list(words, f"{path} {rid!r}")
    return out


class AlignmentSource:
    """Alignments by utterance id from a file (CTM, JSON, JSONL) or a folder of ``<id>.TextGrid``/``<id>.json``/
    ``<id>.ctm`` (NeMo's forced aligner writes one CTM per utterance under ``ctm/words/``: that output folder
    itself is accepted too).

    Folders are read lazily, one file per utterance, so a corpus of any size costs no memory up front.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.table: dict[str, Alignment] | None = None
        if self.path.is_dir():
            if (self.path / "ctm" / "words").is_dir():
                self.path = self.path / "ctm" / "words"
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"alignments {self.path} not found")
        suffix = self.path.suffix.lower()
        if suffix == ".ctm":
            self.table = read_ctm(self.path)
        elif suffix in (".json", ".jsonl"):
            self.table = read_json_alignments(self.path)
        elif suffix == ".textgrid":
            self.table = {self.path.stem: read_textgrid(self.path)}
        else:
            raise ValueError(f"alignments {self.path}: expected .ctm, .json, .jsonl, .TextGrid or a folder")

    def ids(self) -> set[str] | None:
        """Every utterance id the source holds, when it is a table (None for lazy folders)."""
        return None if self.table is None else set(self.table)

    def get(self, rid: str) -> Alignment | None:
        if self.table is not None:
            return self.table.get(rid)
        for name in (f"{rid}.TextGrid", f"{rid}.textgrid"):
            p = self.path / name
            if p.is_file():
                return read_textgrid(p)
        p = self.path / f"{rid}.json"
        if p.is_file():
            try:
                obj = json.loads(read_text_file(p))
            except json.JSONDecodeError as e:
                raise AlignmentError("bad_alignment", f"{p}: not JSON ({e.msg}, line {e.lineno})") from e
            return parse_word_list(obj, str(p))
        p = self.path / f"{rid}.ctm"
        if p.is_file():
            table = read_ctm(p)
            if rid in table:
                return table[rid]
            if len(table) == 1:  # NeMo names the utterance after its audio file, which need not be the record id
                return next(iter(table.values()))
            raise AlignmentError("bad_alignment", f"{p}: holds {len(table)} utterances, none named {rid!r}")
        return None
