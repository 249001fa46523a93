"""The SpiRit-LM vocabulary: layout (vocab), unit strings (units), building (build) and using (tokenizer)."""
from .units import merge_units, stream_ids, stream_string, string_to_units, units_to_string
from .vocab import FLAVORS, HUBERT, PITCH, STYLE, STREAMS, SpiritVocab, padded_vocab_size

__all__ = [
    "FLAVORS",
    "HUBERT",
    "PITCH",
    "STYLE",
    "STREAMS",
    "SpiritVocab",
    "SpiritTokenizer",
    "build_tokenizer",
    "merge_units",
    "padded_vocab_size",
    "stream_ids",
    "stream_string",
    "string_to_units",
    "units_to_string",
]


def __getattr__(name):  # sentencepiece/protobuf load only when the tokenizer itself is used
    if name == "SpiritTokenizer":
        from .tokenizer import SpiritTokenizer

        return SpiritTokenizer
    if name == "build_tokenizer":
        from .build import build_tokenizer

        return build_tokenizer
    raise AttributeError(name)
