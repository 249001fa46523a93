"""The Hugging Face files of a SpiRit tokenizer folder: ``tokenizer.json`` (what ``AutoTokenizer`` loads in
transformers 4.x and 5.x alike), ``tokenizer_config.json`` and ``special_tokens_map.json`` (docs/spec.md §6).

Why a ``tokenizer.json`` of our own: converting ``tokenizer.model`` is left to transformers otherwise, and its
conversion decodes ``[Text]▁the`` as ``[Text] the`` (the dummy-prefix space of a text segment survives after a
marker), and in transformers 4.x the slow tokenizer encodes ``[Text]the`` as ``▁ [Text] the``, not as the
training data's ``[Text] ▁the``. The file here encodes as :class:`SpiritTokenizer` does (markers and units split
out, each text segment given its dummy prefix) and decodes back to the string: one space after a SpiRit piece
is dropped, as sentencepiece drops it at the start of each text segment. It is a plain
``PreTrainedTokenizerFast``, so no class of transformers rebuilds its decoder.

The BPE model is sentencepiece's: every piece keeps its id, merges rank by the merged piece's id (sentencepiece
BPE merges the highest-scoring piece first; scores fall with the id), byte fallback on. Fillers and SpiRit
pieces take part in no merge, so encoding text never yields a filler.
"""
from __future__ import annotations

import json
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from .vocab import FLAVOR_STREAMS, TEXT_MARKER, new_tokens

_PIECE = sp_pb2.ModelProto.SentencePiece
SPECIAL = ("<unk>", "<s>", "</s>")


def _merges(proto: sp_pb2.ModelProto, base_size: int) -> list[tuple[str, str]]:
    """Merges among the base vocabulary's NORMAL pieces only (nothing from ``base_size`` on, whatever a released
    model's types there)."""
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece for p in proto.pieces[:base_size] if p.type == _PIECE.NORMAL}
    ranked = []
    for i, p in enumerate(proto.pieces[:base_size]):
        if p.type != _PIECE.NORMAL:
            continue
        s = p.piece
        for k in range(1, len(s)):
            left, right = s[:k], s[k:]
            if left in normal and right in normal:
                ranked.append((i, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


#: Unit numbers of each stream as fixed-length regex alternatives (Oniguruma lookbehinds need a fixed length per
#: alternative): 0..500, 0..63, 0..99, no leading zeros.
_UNIT_NUMBERS = {
    "hubert": (r"\d", r"[1-9]\d", r"[1-4]\d\d", "500"),
    "pitch": (r"\d", r"[1-5]\d", r"6[0-3]"),
    "style": (r"\d", r"[1-9]\d"),
}


def spirit_piece_lookbehind(flavor: str) -> str:
    """A lookbehind for "right after one of the flavor's SpiRit pieces"."""
    alts = [r"\[Text\]", r"\[Speech\]"]
    for stream in FLAVOR_STREAMS[flavor]:
        alts += [rf"\[{stream.prefix}{n}\]" for n in _UNIT_NUMBERS[stream.name]]
    return "(?<=" + "|".join(alts) + ")"


def tokenizer_json(proto: sp_pb2.ModelProto, flavor: str) -> str:
    """The ``tokenizers`` serialization of the extended model."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    base_size = vocab[TEXT_MARKER]
    tok = Tokenizer(BPE(vocab=vocab, merges=_merges(proto, base_size), unk_token="<unk>", fuse_unk=True,
                        byte_fallback=True))
    # sentencepiece's own normalization, per text segment as SpiritTokenizer runs it (LLaMA-2: none at all).
    spec, steps = proto.normalizer_spec, []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Replace(Regex(spirit_piece_lookbehind(flavor) + " "), ""),  # each segment's dummy prefix
        decoders.Strip(" ", 1, 0),  # the first segment's
    ])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    # The flavor's SpiRit pieces are split out of text (as SpiritTokenizer does); fillers stay out of reach.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in new_tokens(flavor)])
    bos = vocab["<s>"]
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return tok.to_str()


def tokenizer_config(model_max_length: int = 4096) -> dict:
    """``tokenizer_config.json``: a PreTrainedTokenizerFast over ``tokenizer.json``, BOS added, EOS not."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }


def write_hf_tokenizer_files(out_dir: str | Path, proto: sp_pb2.ModelProto, flavor: str) -> None:
    out_dir = Path(out_dir)
    (out_dir / "tokenizer.json").write_text(tokenizer_json(proto, flavor))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n"
    )

