"""The SpiRit-LM vocabulary layout (docs/spec.md §1): the one place that knows the offsets and the flavors.

Every other module asks this one for ids, strings and sizes, so a change of layout is a change here only.
New tokens sit right after the base sentencepiece vocabulary, in the order
``[Text] [Speech] [Hu0..500] [Pi0..63] [St0..99]``; ids are ``base_size + offset``. A BASE tokenizer holds
only ``[Text] [Speech] [Hu0..500]``. After the flavor's pieces come filler pieces ``[Madeuptoken<id>]`` up to
the exported size, as in the released tokenizers, so the tokenizer has exactly as many ids as the exported
embedding has rows (32512 BASE / 32768 EXPRESSIVE for LLaMA-2); encoding never produces a filler.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

TEXT_MARKER = "[Text]"
SPEECH_MARKER = "[Speech]"
#: Markers as the paper writes them; accepted on input, never emitted.
MARKER_ALIASES = {"[TEXT]": TEXT_MARKER, "[SPEECH]": SPEECH_MARKER}


@dataclass(frozen=True)
class Stream:
    """A discrete unit stream: its token prefix, how many ids it reserves, and its frame rate in Hz."""

    name: str
    prefix: str
    count: int
    rate: float
    dedup: bool

    def token(self, unit: int) -> str:
        return f"[{self.prefix}{unit}]"


#: Rates as in docs/spec.md §2. HuBERT's merge rate is 24.99 as in the release (the frame rate itself is 25 Hz).
HUBERT = Stream("hubert", "Hu", 501, 25.0, True)
PITCH = Stream("pitch", "Pi", 64, 12.5, True)
STYLE = Stream("style", "St", 100, 1.0, False)
STREAMS = (HUBERT, PITCH, STYLE)
STREAM_BY_PREFIX = {s.prefix: s for s in STREAMS}

#: Offsets of the new tokens from the base vocabulary size.
TEXT_OFFSET = 0
SPEECH_OFFSET = 1
STREAM_OFFSETS = {"hubert": 2, "pitch": 2 + 501, "style": 2 + 501 + 64}
NUM_NEW_TOKENS = 2 + 501 + 64 + 100

FLAVORS = ("base", "expressive")
#: Streams each flavor's sequences use.
FLAVOR_STREAMS = {"base": (HUBERT,), "expressive": (HUBERT, PITCH, STYLE)}
#: The exported (Hugging Face) embedding is the flavor's used ids rounded up to this multiple: for LLaMA-2's
#: 32000-piece base that gives the release's 32512 (base) and 32768 (expressive).
EXPORT_PAD_MULTIPLE = 256

#: Filler pieces between the flavor's last SpiRit piece and the exported size are named for their id, as the
#: released tokenizers name them (public fine-tuning code looks up ``[Madeuptoken32767]``).
FILLER_PREFIX = "[Madeuptoken"
FILLER_RE = re.compile(r"\[Madeuptoken(\d+)\]")


def filler_token(token_id: int) -> str:
    return f"{FILLER_PREFIX}{token_id}]"


#: Any marker or unit token, as it may appear in input text.
SPECIAL_TOKEN_RE = re.compile(r"\[(?:Text|Speech|TEXT|SPEECH|Hu\d+|Pi\d+|St\d+)\]")


def check_flavor(flavor: str) -> str:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}: expected one of {', '.join(FLAVORS)}")
    return flavor


def new_tokens(flavor: str = "expressive") -> list[str]:
    """The flavor's SpiRit pieces, in id order (fillers not included).

    BASE's are a prefix of EXPRESSIVE's, so an id means the same piece in both flavors.
    """
    check_flavor(flavor)
    tokens = [TEXT_MARKER, SPEECH_MARKER]
    for stream in FLAVOR_STREAMS[flavor]:
        tokens += [stream.token(u) for u in range(stream.count)]
    assert flavor == "base" or len(tokens) == NUM_NEW_TOKENS
    return tokens


@dataclass(frozen=True)
class SpiritVocab:
    """Ids of the SpiRit tokens for a given base vocabulary size (32000 for LLaMA-2)."""

    base_size: int = 32000
    flavor: str = "expressive"

    def __post_init__(self):
        check_flavor(self.flavor)
        if self.base_size < 3:
            raise ValueError(f"base vocabulary size {self.base_size} is too small")

    @property
    def text_id(self) -> int:
        return self.base_size + TEXT_OFFSET

    @property
    def speech_id(self) -> int:
        return self.base_size + SPEECH_OFFSET

    def stream_offset(self, stream: Stream) -> int:
        """Id of unit 0 of a stream in SPEC's layout (arithmetic only: a BASE tokenizer has fillers there for
        pitch and style; :meth:`unit_id` and :meth:`token_to_id` refuse what the flavor lacks)."""
        return self.base_size + STREAM_OFFSETS[stream.name]

    def unit_id(self, stream: Stream, unit: int) -> int:
        if stream not in self.streams:
            raise ValueError(f"a {self.flavor.upper()} vocabulary has no {stream.name} units ({stream.token(unit)}): "
                             f"use an EXPRESSIVE tokenizer")
        if not 0 <= unit < stream.count:
            raise ValueError(f"{stream.name} unit {unit} out of range [0, {stream.count})")
        return self.stream_offset(stream) + unit

    @property
    def streams(self) -> tuple[Stream, ...]:
        return FLAVOR_STREAMS[self.flavor]

    @property
    def size(self) -> int:
        """Ids this flavor's sequences can contain (base + markers + its streams' units)."""
        last = max(self.stream_offset(s) + s.count for s in self.streams)
        return last

    @property
    def full_size(self) -> int:
        """Size of the tokenizer: the flavor's pieces plus fillers up to the exported size."""
        return self.export_size

    @property
    def export_size(self) -> int:
        """Embedding rows of the exported Hugging Face model (32512 base / 32768 expressive for LLaMA-2)."""
        return -(-self.size // EXPORT_PAD_MULTIPLE) * EXPORT_PAD_MULTIPLE

    def pieces(self) -> list[str]:
        """Every piece after the base vocabulary, in id order: the flavor's SpiRit pieces, then the fillers."""
        spirit = new_tokens(self.flavor)
        return spirit + [filler_token(i) for i in range(self.base_size + len(spirit), self.full_size)]

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        """The pieces encoding produces (the flavor's markers and units, and the marker aliases; no fillers)."""
        table = {tok: self.base_size + i for i, tok in enumerate(new_tokens(self.flavor))}
        for alias, canonical in MARKER_ALIASES.items():
            table[alias] = table[canonical]
        return table

    @cached_property
    def id_to_token(self) -> dict[int, str]:
        """Every id above the base vocabulary, fillers included."""
        return {self.base_size + i: tok for i, tok in enumerate(self.pieces())}

    def stream_of(self, token_id: int) -> Stream | None:
        """The flavor's unit stream an id belongs to, or None for text, markers and fillers."""
        for stream in self.streams:
            lo = self.stream_offset(stream)
            if lo <= token_id < lo + stream.count:
                return stream
        return None

    def is_speech_id(self, token_id: int) -> bool:
        return self.stream_of(token_id) is not None

    def is_text_id(self, token_id: int) -> bool:
        return 0 <= token_id < self.base_size


def padded_vocab_size(size: int, divisible_by: int = 128, tensor_parallel: int = 1) -> int:
    """Megatron's embedding padding: a multiple of ``divisible_by × TP`` (docs/spec.md §1)."""
    multiple = divisible_by * tensor_parallel
    return -(-size // multiple) * multiple
