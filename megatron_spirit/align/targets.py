"""A transcript as CTC targets in a model's alphabet, with the token range of every word.

The words are docs/spec.md §3 aligned text (``data.alignments.normalize_text``: lower case, punctuation off), so the
alignment's words equal what the interleaver checks them against. Characters are looked up as they are, or
upper-cased for upper-case alphabets (wav2vec2-960h). A run of characters the model lacks becomes one
``<star>`` token (log-probability 0 at every frame, as torchaudio's MMS aligner appends it), so the word keeps
its place and its time instead of being dropped; ``unknown`` counts such characters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..data.alignments import normalize_text


@dataclass(frozen=True)
class Targets:
    words: tuple[str, ...]
    tokens: tuple[int, ...]
    word_tokens: tuple[tuple[int, int], ...]  # [first, last] token index of each word
    unknown: int  # characters aligned to the star token


@dataclass(frozen=True)
class Alphabet:
    """A CTC model's output tokens as the aligner needs them."""

    vocab: Mapping[str, int]
    blank: int
    star: int  # the appended wildcard column
    delimiter: int | None  # word delimiter token ("|"), aligned between words when the model has one
    upper: bool  # the alphabet's letters are upper case

    @classmethod
    def of(cls, vocab: Mapping[str, int], blank: int, delimiter: str | None = "|") -> "Alphabet":
        letters = [t for t in vocab if len(t) == 1 and t.isalpha()]
        upper = bool(letters) and all(t.isupper() for t in letters)
        size = max(vocab.values()) + 1
        return cls(dict(vocab), blank, size, vocab.get(delimiter) if delimiter else None, upper)

    @property
    def size(self) -> int:
        """Emission columns including the star."""
        return self.star + 1

    def char_id(self, ch: str) -> int | None:
        i = self.vocab.get(ch.upper() if self.upper else ch)
        if i is None and not self.upper:
            i = self.vocab.get(ch.upper())
        return None if i == self.blank else i


def make_targets(text: str, alphabet: Alphabet) -> Targets:
    words = normalize_text(text)
    tokens: list[int] = []
    spans: list[tuple[int, int]] = []
    unknown = 0
    for wi, word in enumerate(words):
        if wi and alphabet.delimiter is not None:
            tokens.append(alphabet.delimiter)
        first = len(tokens)
        for ch in word:
            i = alphabet.char_id(ch)
            if i is None:
                unknown += 1
                if len(tokens) > first and tokens[-1] == alphabet.star:
                    continue  # one star per run of unknown characters
                i = alphabet.star
            tokens.append(i)
        spans.append((first, len(tokens) - 1))
    return Targets(tuple(words), tuple(tokens), tuple(spans), unknown)
