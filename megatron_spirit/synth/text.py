"""A small seeded English sentence generator: varied, grammatical-looking text with case and punctuation."""
from __future__ import annotations

import random
from typing import Iterator

_SUBJECTS = ["the cat", "a dog", "my sister", "the old man", "our teacher", "the little bird", "a farmer",
             "the children", "her friend", "the captain", "a young girl", "the baker"]
_VERBS = ["found", "saw", "painted", "carried", "wanted", "opened", "followed", "remembered", "cleaned",
          "sold", "bought", "watched"]
_OBJECTS = ["a red ball", "the green door", "an empty box", "the long road", "a small boat", "the blue house",
            "a warm coat", "the quiet river", "a heavy book", "the bright lamp", "seven apples", "the map"]
_PLACES = ["in the garden", "near the station", "after dinner", "before the storm", "on the hill",
           "at the market", "by the sea", "under the bridge", "during the night", "with great care"]
_NAMES = ["Alice", "Bob", "Paris", "London", "Monday", "December", "Mister Brown", "Doctor Lee"]


def sentence(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(_PLACES))
    if rng.random() < 0.3:
        parts.append("and " + rng.choice(_NAMES) + " " + rng.choice(_VERBS) + " " + rng.choice(_OBJECTS))
    s = " ".join(parts)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "!", "?"])


def sentences(n: int, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield sentence(rng)


def documents(n: int, seed: int = 0, min_sentences: int = 2, max_sentences: int = 8) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield " ".join(sentence(rng) for _ in range(rng.randint(min_sentences, max_sentences)))
