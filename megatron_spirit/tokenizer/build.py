"""Extend a LLaMA-2-style sentencepiece model with the SpiRit pieces and write a Hugging Face tokenizer folder.

The new pieces are USER_DEFINED (sentencepiece matches them inside text; CONTROL pieces it would not), appended
after the base pieces so every base id is unchanged and new ids are ``base size + docs/spec.md §1 offset``; the
fillers up to the exported size are UNUSED (never produced). Extending a SpiRit tokenizer again (a released
model's, or an export's) keeps every id: its pieces must already sit at SPEC's ids.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from ..utils.atomic import atomic_dir
from .files import SPIRIT_META, TOKENIZER_MODEL
from .hf_files import write_hf_tokenizer_files
from .tokenizer import SpiritTokenizer
from .vocab import FILLER_RE, TEXT_MARKER, SpiritVocab, check_flavor, new_tokens


def load_model_proto(path: str | os.PathLike) -> sp_pb2.ModelProto:
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"base sentencepiece model not found: {path}")
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError names nothing useful
        raise ValueError(f"{path} is not a sentencepiece model: {e}") from e
    if not len(proto.pieces):
        raise ValueError(f"{path} is not a sentencepiece model: it has no pieces")
    return proto


def _is_spirit_name(piece: str) -> bool:
    return piece in _SPIRIT_NAMES or FILLER_RE.fullmatch(piece) is not None


_SPIRIT_NAMES = frozenset(new_tokens("expressive"))


def existing_layout_problem(have: list[str], base_size: int, flavor: str) -> str | None:
    """Why SpiRit pieces already in a model (``have``: its pieces from ``[Text]`` on) are not SPEC's layout for
    ``flavor``, or None. Beyond the flavor's own pieces, EXPRESSIVE's pieces and fillers are accepted (they are
    replaced by the flavor's fillers: an EXPRESSIVE tokenizer can be narrowed to BASE, not widened)."""
    target = SpiritVocab(base_size, flavor).pieces()
    wide = SpiritVocab(base_size, "expressive").pieces()
    own = len(new_tokens(flavor))
    for k, got in enumerate(have):
        if k < len(target) and got == target[k]:
            continue
        if k >= own and ((k < len(wide) and got == wide[k]) or FILLER_RE.fullmatch(got)):
            continue
        expected = repr(target[k]) if k < len(target) else "no piece"
        return f"piece {got!r} at id {base_size + k}, where SPEC's {flavor.upper()} layout has {expected}"
    return None


def extend_model_proto(proto: sp_pb2.ModelProto, flavor: str = "expressive") -> sp_pb2.ModelProto:
    """Return a copy of ``proto`` with the flavor's SpiRit pieces and the fillers after its base pieces.

    A model that already holds SpiRit pieces (a SpiRit tokenizer: ours, or a released model's) is accepted when
    they sit at SPEC's ids; its base pieces are kept and the rest is written afresh, so rebuilding is a no-op.
    """
    check_flavor(flavor)
    pieces = [p.piece for p in proto.pieces]
    base = pieces.index(TEXT_MARKER) if TEXT_MARKER in pieces else len(pieces)
    for i, piece in enumerate(pieces[:base]):
        if _is_spirit_name(piece):
            raise ValueError(
                f"the base model holds the SpiRit piece {piece!r} at id {i}, before {TEXT_MARKER} (id "
                f"{base if base < len(pieces) else 'absent'}): not SPEC's layout (docs/spec.md §1); extend the "
                f"original LLaMA-2 tokenizer"
            )
    problem = existing_layout_problem(pieces[base:], base, flavor)
    if problem is not None:
        raise ValueError(f"the base model already holds SpiRit pieces, not in SPEC's layout (docs/spec.md §1): "
                         f"{problem}")
    out = sp_pb2.ModelProto()
    out.CopyFrom(proto)
    del out.pieces[base:]
    spirit = set(new_tokens(flavor))
    for tok in SpiritVocab(base, flavor).pieces():
        piece = out.pieces.add()
        piece.piece = tok
        piece.score = 0.0
        # USER_DEFINED: sentencepiece matches them inside text (CONTROL pieces it would not). UNUSED: never output.
        piece.type = (sp_pb2.ModelProto.SentencePiece.USER_DEFINED if tok in spirit
                      else sp_pb2.ModelProto.SentencePiece.UNUSED)
    return out


def write_hf_files(out_dir: str | os.PathLike, flavor: str, base_size: int, proto: sp_pb2.ModelProto) -> None:
    """The Hugging Face side files next to ``tokenizer.model`` (docs/spec.md §6), plus our own metadata."""
    out_dir = Path(out_dir)
    write_hf_tokenizer_files(out_dir, proto, flavor)
    vocab = SpiritVocab(base_size, flavor)
    meta = {
        "flavor": flavor,
        "base_vocab_size": base_size,
        "tokenizer_size": vocab.full_size,
        "flavor_vocab_size": vocab.size,
        "export_vocab_size": vocab.export_size,
    }
    (out_dir / SPIRIT_META).write_text(json.dumps(meta, indent=2) + "\n")


LICENCE_FILES = ("LICENSE", "LICENSE.txt", "USE_POLICY.md")


def copy_tokenizer(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """What a checkpoint or an export carries of a tokenizer folder (a SpiRit tokenizer's, or a whole HF model
    folder's): ``tokenizer.model``, our metadata and the licence, as they are, and the Hugging Face files
    written afresh from the model, so that an export of a released model gets files whose ids and decoding
    match :class:`SpiritTokenizer` (docs/spec.md §6). Deterministic: copying a copy gives the same bytes."""
    src = Path(src)
    src_dir = src if src.is_dir() else src.parent
    tok = SpiritTokenizer(src_dir)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (TOKENIZER_MODEL, SPIRIT_META) + LICENCE_FILES:
        if (src_dir / name).is_file():
            shutil.copy(src_dir / name, dst / name)
    write_hf_tokenizer_files(dst, load_model_proto(src_dir), tok.flavor)
    return dst


def build_tokenizer(base_model: str | os.PathLike, out_dir: str | os.PathLike, flavor: str = "expressive") -> Path:
    """Write the extended tokenizer folder atomically and check it; return the folder."""
    check_flavor(flavor)
    proto = load_model_proto(base_model)
    extended = extend_model_proto(proto, flavor)
    base_size = [p.piece for p in extended.pieces].index(TEXT_MARKER)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / TOKENIZER_MODEL).write_bytes(extended.SerializeToString())
        write_hf_files(tmp, flavor, base_size, extended)
        base_path = Path(base_model)
        # Keep the base model's licence/readme if it came as a folder: users redistribute the result.
        if base_path.is_dir():
            for extra in LICENCE_FILES:
                if (base_path / extra).is_file():
                    shutil.copy(base_path / extra, tmp / extra)
        SpiritTokenizer(tmp).check()
    return out_dir
