"""Generated aligned speech corpora with a known answer.

Word ``i`` of an utterance owns HuBERT unit ``i`` for all its frames (and the pause after it), so after
deduplication every word contributes exactly one ``[Hu i]``: a decoded sequence can be mapped back to word
indices and checked for loss or duplication. Pitch and style streams are random at their native rates.
"""
import json
import random

import numpy as np

from megatron_spirit.speech.manifest import StreamUnits, UnitsRecord
from megatron_spirit.synth.text import sentence
from megatron_spirit.tokenizer.vocab import HUBERT, PITCH, STYLE


def make_utterance(rid: str, rng: random.Random, n_words: int | None = None) -> dict:
    """A manifest record (dict) with inline word alignment (``words``) and its transcript (``text``)."""
    words = []
    while len(words) < (n_words or rng.randint(8, 60)):
        words += sentence(rng).split()
    words = words[: n_words or len(words)]
    frames_hu, times, frame = [], [], rng.randint(0, 4)
    frames_hu += [0] * frame  # leading silence: owned by word 0, same unit as word 0
    for i, _ in enumerate(words):
        k = rng.randint(2, 7)
        times.append((frame / 25.0, (frame + k) / 25.0))
        pause = rng.choice([0, 0, 1, 3])
        frames_hu += [i] * (k + pause)
        frame += k + pause
    n = len(frames_hu)
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    pitch = np.repeat(nrng.integers(0, PITCH.count, size=n), 2)[: (n + 1) // 2]
    style = nrng.integers(0, STYLE.count, size=max(1, -(-n // 25)))
    rec = UnitsRecord(
        rid, n / 25.0,
        {"hubert": StreamUnits.from_frames(frames_hu, 25.0, HUBERT),
         "pitch": StreamUnits.from_frames(pitch, 12.5, PITCH),
         "style": StreamUnits.from_frames(style, 1.0, STYLE)},
        {"text": " ".join(words),
         "words": [{"word": w, "start": round(s, 4), "end": round(e, 4)} for w, (s, e) in zip(words, times)]},
    )
    return json.loads(rec.to_json())


def make_corpus(n: int, seed: int = 0, max_words: int | None = None) -> list[dict]:
    rng = random.Random(seed)
    return [make_utterance(f"utt{seed}_{i}", rng, rng.randint(8, max_words) if max_words else None)
            for i in range(n)]


def write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)
