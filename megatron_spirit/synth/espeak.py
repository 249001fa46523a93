"""Synthetic speech with ground-truth word times: libespeak-ng through ctypes.

Why the C library and not the ``espeak-ng`` command: only the library reports events with audio positions.
Word times come from PHONEME events (a word starts at its first non-pause phoneme and ends where the next
event after its last phoneme starts); WORD events' own times include the pause before the word and are not used.
espeak merges some function-word pairs ("in the", "for the") into one WORD event: the merged event's phonemes
are split between its words in proportion to each word's phoneme count (from ``espeak_TextToPhonemes``).
See docs/notes/espeak-alignments.md for what was measured.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SAMPLE_RATE = 16000

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EV_WORD, _EV_END, _EV_MSG_TERMINATED, _EV_PHONEME = 1, 5, 6, 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
_WORD_RE = re.compile(r"[\w']+")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Synthesis:
    """16 kHz mono float32 audio and its words with start/end times in seconds."""

    audio: np.ndarray
    words: list[Word]
    text: str

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class Espeak:
    """One process-wide libespeak-ng (the library has global state: calls are serialised by a lock)."""

    _lock = threading.Lock()
    _instance: "Espeak | None" = None

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as e:
            raise RuntimeError(f"libespeak-ng not found ({e}); install the libespeak-ng1 package") from e
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self.native_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                 _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if self.native_rate <= 0:
            raise RuntimeError("espeak_Initialize failed (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, bytes]] = []
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: ctypes callbacks die with their Python object
        lib.espeak_SetSynthCallback(self._cb)

    @classmethod
    def get(cls) -> "Espeak":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            e = events[i]
            self._events.append((e.type, e.text_position, e.length, e.audio_position, bytes(e.id.string)))
            i += 1
        return 0

    def phoneme_count(self, word: str, voice: str) -> int:
        """How many phonemes espeak gives a word said alone (used to split merged word events)."""
        self.lib.espeak_SetVoiceByName(voice.encode())
        buf = ctypes.c_char_p(word.encode("utf-8"))
        ptr = ctypes.pointer(buf)
        out = self.lib.espeak_TextToPhonemes(ptr, _CHARS_UTF8, ord(" ") << 8) or b""
        return max(1, len([p for p in out.decode("utf-8", "replace").split() if p]))

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                   pitch_range: int = 50) -> Synthesis:
        """Speak ``text``; return 16 kHz audio and per-word times (lower-cased words without punctuation)."""
        import soxr

        words = _WORD_RE.findall(text)
        if not words:
            raise ValueError(f"nothing to say in {text!r}")
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            for key, val in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
                self.lib.espeak_SetParameter(_PARAM[key], int(val), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with code {err} on {text!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events = list(self._events)
            counts = {}
            spans = _word_spans(text)
            times = _word_times(events, spans, len(pcm) / self.native_rate,
                                lambda w: counts.setdefault(w, self.phoneme_count(w, voice)))
            self.lib.espeak_SetVoiceByName(voice.encode())
        audio = soxr.resample(pcm.astype(np.float32) / 32768.0, self.native_rate, SAMPLE_RATE).astype(np.float32)
        dur = len(audio) / SAMPLE_RATE
        out = [Word(w.lower(), min(s, dur), min(e, dur)) for w, (s, e) in zip(words, times)]
        return Synthesis(audio, out, text)


def _word_spans(text: str) -> list[tuple[int, int, str]]:
    """Character spans (1-based start as espeak reports it) of the transcript's words."""
    return [(m.start() + 1, m.end() + 1, m.group()) for m in _WORD_RE.finditer(text)]


def _is_pause(name: bytes) -> bool:
    s = name.split(b"\0")[0]
    return not s or s.startswith(b"_")


def _word_times(events, spans, total: float, phoneme_count) -> list[tuple[float, float]]:
    """Word (start, end) from PHONEME events grouped under the WORD event that precedes them."""
    groups: list[tuple[int, int, list[tuple[float, bytes]]]] = []  # (text pos, length, phonemes)
    boundaries: list[float] = []  # audio position (s) of every event, in order, to find "the next event"
    for typ, pos, length, audio_ms, name in events:
        t = audio_ms / 1000.0
        if typ == _EV_WORD:
            groups.append((pos, length, []))
        elif typ == _EV_PHONEME and groups:
            groups[-1][2].append((t, name))
        if typ in (_EV_WORD, _EV_PHONEME, _EV_END, _EV_MSG_TERMINATED):
            boundaries.append(t)
    boundaries = sorted(boundaries) + [total]

    def next_after(t: float) -> float:
        for b in boundaries:
            if b > t:
                return b
        return total

    # Assign each transcript word to the WORD event whose text span contains its first character.
    per_event: list[list[int]] = [[] for _ in groups]
    for wi, (ws, _, _) in enumerate(spans):
        hit = None
        for gi, (pos, length, _) in enumerate(groups):
            if pos <= ws < pos + max(length, 1):
                hit = gi
                break
        if hit is None:  # a merged event that reports only its first word: the nearest event starting before
            cands = [(pos, gi) for gi, (pos, _, ph) in enumerate(groups) if pos <= ws and ph]
            hit = max(cands)[1] if cands else 0
        per_event[hit].append(wi)

    times: list[tuple[float, float] | None] = [None] * len(spans)
    for (pos, length, phones), widx in zip(groups, per_event):
        if not widx:
            continue
        voiced = [(t, n) for t, n in phones if not _is_pause(n)]
        if not voiced:
            continue
        # Split a merged event's phonemes between its words by their phoneme counts.
        counts = [phoneme_count(spans[w][2]) for w in widx]
        total_c = sum(counts)
        cut = [0]
        for c in counts:
            cut.append(min(len(voiced), round(cut[-1] + c * len(voiced) / total_c)))
        cut[-1] = len(voiced)
        for k, w in enumerate(widx):
            seg = voiced[cut[k]:cut[k + 1]] or voiced[min(cut[k], len(voiced) - 1):][:1]
            start = seg[0][0]
            end = next_after(seg[-1][0])
            times[w] = (start, end)
    # Words espeak gave no phonemes (should not happen): zero-length at the previous word's end.
    prev = 0.0
    for i, t in enumerate(times):
        if t is None:
            times[i] = (prev, prev)
        prev = times[i][1]
    return times  # type: ignore[return-value]


def synthesize(text: str, voice: str = "en-us", **kw) -> Synthesis:
    return Espeak.get().synthesize(text, voice, **kw)


#: A few voices that sound different (espeak variants and pitch settings): speaker ids for a small corpus.
VOICES = (
    {"voice": "en-us", "pitch": 45, "pitch_range": 50, "rate": 170},
    {"voice": "en-us+f3", "pitch": 65, "pitch_range": 70, "rate": 160},
    {"voice": "en", "pitch": 35, "pitch_range": 40, "rate": 180},
    {"voice": "en-us+m3", "pitch": 55, "pitch_range": 90, "rate": 150},
)


def write_corpus(sentences: Iterable[str], out_dir: str | Path, voices: Sequence[dict] = VOICES,
                 prefix: str = "utt") -> Path:
    """Speak each sentence (voices in turn) to ``out_dir/wav/*.wav``; write ``out_dir/manifest.jsonl``.

    Manifest records: id, path, speaker, text (lower-cased, no punctuation) and alignment (word, start, end).
    Re-runs keep existing wavs; the manifest is written atomically at the end.
    """
    import soundfile as sf

    from ..utils.atomic import atomic_path, write_text

    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, sentence in enumerate(sentences):
        v = voices[i % len(voices)]
        uid = f"{prefix}{i:06d}"
        wav = out_dir / "wav" / f"{uid}.wav"
        syn = synthesize(sentence, **v)
        if not wav.exists():
            with atomic_path(wav, ".wav") as tmp:
                sf.write(tmp, syn.audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        rec = {"id": uid, "path": str(wav.resolve()), "speaker": f"{v['voice']}/p{v['pitch']}",
               "text": " ".join(w.word for w in syn.words),
               "alignment": [[w.word, round(w.start, 4), round(w.end, 4)] for w in syn.words]}
        lines.append(json.dumps(rec))
    path = out_dir / "manifest.jsonl"
    write_text(path, "\n".join(lines) + "\n")
    return path
