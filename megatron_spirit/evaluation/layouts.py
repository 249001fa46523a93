"""Benchmark folders in the released layouts (ZeroSpeech lexical/syntactic, slamkit story pairs, cross-modal
StoryCloze files), for the demo and the tests: noise wavs unless ``audio`` makes them (e.g. espeak)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .benchmarks import LEXICAL_COLUMNS, SYNTACTIC_COLUMNS


def write_wav(path: Path, seconds: float = 0.3, seed: int = 0, audio=None):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    if audio is None:
        audio = np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    sf.write(path, audio, 16000, subtype="PCM_16")


def lexical(root: Path, pairs, voices=("v1", "v2"), split="dev", audio=None) -> Path:
    """``pairs``: (id, word, nonword, frequency). Filenames are random-looking stems as released."""
    folder = root / "lexical" / split
    rows = []
    n = 0
    for pid, word, nonword, freq in pairs:
        for v in voices:
            for w, c in ((word, 1), (nonword, 0)):
                stem = f"f{n:04d}x"
                n += 1
                rows.append({"filename": stem, "id": pid, "voice": v, "frequency": freq if c else "",
                             "word": w, "phones": " ".join(w), "length": len(w), "correct": c})
                write_wav(folder / f"{stem}.wav", seed=n, audio=audio(w, v) if audio else None)
    _write_csv(folder / "gold.csv", LEXICAL_COLUMNS, rows)
    return root / "lexical"


def syntactic(root: Path, pairs, voices=("v1", "v2"), split="dev", audio=None) -> Path:
    """``pairs``: (id, type, subtype, sentence, nonsentence); ``audio(text, voice)`` makes a wav's samples."""
    folder = root / "syntactic" / split
    rows = []
    n = 0
    for pid, t, st, good, bad in pairs:
        for v in voices:
            for s, c in ((good, 1), (bad, 0)):
                stem = f"s{n:04d}y"
                n += 1
                rows.append({"filename": stem, "type": t, "subtype": st, "id": pid, "voice": v,
                             "transcription": s, "correct": c})
                write_wav(folder / f"{stem}.wav", seed=n, audio=audio(s, v) if audio else None)
    _write_csv(folder / "gold.csv", SYNTACTIC_COLUMNS, rows)
    return root / "syntactic"


def _write_csv(path: Path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


def story_pairs(root: Path, n: int = 3, audio=None) -> Path:
    for k in range(n):
        for tag in ("a", "b"):  # name order: the first of the pair is the correct story
            write_wav(root / f"{k}_{tag}story.wav", seed=k * 2 + (tag == "b"),
                      audio=audio(k, tag) if audio else None)
    return root


def cross_modal(root: Path, stories, audio=None) -> Path:
    """``stories``: (stem, context, correct ending, incorrect ending); ``audio(text)`` makes a wav's samples."""
    for stem, ctx, good, bad in stories:
        for part, text in (("mutual", ctx), ("correct", good), ("incorrect", bad)):
            (root / f"{stem}_{part}.txt").parent.mkdir(parents=True, exist_ok=True)
            (root / f"{stem}_{part}.txt").write_text(text + "\n")
            write_wav(root / f"{stem}_{part}.wav", seed=len(text), audio=audio(text) if audio else None)
    return root
