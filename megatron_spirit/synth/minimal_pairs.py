"""Minimal pairs for a toy comprehension benchmark: corpus words vs pronounceable non-words (sWUGGY-style),
sentences vs the same with two words swapped (sBLIMP-style), short stories with a fitting or scrambled ending.

A model trained on the texts should prefer the real member of each pair; the demo checks that it does.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Iterable

from .text import sentence

_VOWELS = "aeiou"


def corpus_words(texts: Iterable[str], min_len: int = 3) -> list[str]:
    """Lower-case alphabetic words of ``texts``, most frequent first (ties alphabetically)."""
    counts = Counter(w for t in texts for w in re.findall(r"[a-z]+", t.lower()) if len(w) >= min_len)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def nonword(word: str, rng: random.Random, avoid: set[str]) -> str | None:
    """``word`` with one vowel changed into another (pronounceable, same length), not in ``avoid``."""
    spots = [i for i, c in enumerate(word) if c in _VOWELS]
    rng.shuffle(spots)
    for i in spots:
        for v in rng.sample(_VOWELS, len(_VOWELS)):
            cand = word[:i] + v + word[i + 1:]
            if v != word[i] and cand not in avoid:
                return cand
    return None


def word_pairs(texts: Iterable[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(word, non-word) for the ``n`` most frequent corpus words that have a vowel to change."""
    words = corpus_words(texts)
    known = set(words)
    rng = random.Random(seed)
    out = []
    for w in words:
        nw = nonword(w, rng, known)
        if nw is not None:
            out.append((w, nw))
        if len(out) == n:
            break
    return out


def _plain(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def sentence_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(sentence, the same with two neighbouring words swapped), lower case without punctuation."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        words = _plain(sentence(rng)).split()
        i = rng.randrange(len(words) - 1)
        if words[i] == words[i + 1]:
            continue
        bad = words[:i] + [words[i + 1], words[i]] + words[i + 2:]
        out.append((" ".join(words), " ".join(bad)))
    return out


def stories(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(two-sentence context, a fitting third sentence, the same sentence's words shuffled)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        ctx = " ".join(sentence(rng) for _ in range(2))
        good = sentence(rng)
        words = good.rstrip(".!?").split()
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        out.append((ctx, good, " ".join(shuffled).lower().capitalize() + "."))
    return out
