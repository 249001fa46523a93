"""Building the extended tokenizer: every piece one id, text round trips, Hugging Face loads it, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_spirit.synth.text import sentences
from megatron_spirit.tokenizer.build import build_tokenizer, extend_model_proto, load_model_proto
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
from megatron_spirit.tokenizer.vocab import HUBERT, PITCH, new_tokens

ROOT = Path(__file__).resolve().parents[2]


def test_every_new_token_is_one_id(spirit_tokenizer_dir):
    tok = SpiritTokenizer(spirit_tokenizer_dir)
    base = tok.vocab.base_size
    for offset, piece in enumerate(new_tokens()):
        assert tok.encode(piece) == [base + offset], piece
    assert tok.encode("[Hu30]") == [tok.vocab.token_to_id["[Hu30]"]]
    assert tok.encode("[Hu30][Hu3]0") [:2] == [tok.vocab.token_to_id["[Hu30]"], tok.vocab.token_to_id["[Hu3]"]]
    # Not a SpiRit token (unit beyond range): stays text, never a wrong unit id.
    assert all(i < base for i in tok.encode("[Hu501]"))


def test_mixed_string_round_trip(spirit_tokenizer_dir):
    tok = SpiritTokenizer(spirit_tokenizer_dir)
    s = "[Text]the cat sat on the mat[Speech][Hu3][Hu30][Pi2][St9][Hu7][Text]And Bob saw a red ball!"
    ids = tok.encode(s, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == s
    # Paper spellings are accepted and mapped to the release's.
    assert tok.encode("[TEXT]hello[SPEECH][Hu1]") == tok.encode("[Text]hello[Speech][Hu1]")


def test_base_text_ids_unchanged(base_spm, spirit_tokenizer_dir):
    import sentencepiece as spm

    base = spm.SentencePieceProcessor(model_file=str(base_spm))
    tok = SpiritTokenizer(spirit_tokenizer_dir)
    for s in sentences(50, seed=7):
        assert tok.encode(s) == base.encode(s)
        assert tok.decode(tok.encode(s)) == s


#: Canonical strings (docs/spec.md §6): no space next to a marker or unit; these round trip through both.
CANONICAL = [
    "[Hu30]",
    "[Speech][Hu3][Hu30][Hu500]",
    "[Text]the cat sat[Speech][Hu3][Hu7][Text]on the mat",
    "[St81][Hu78][Pi13][Hu42]",
    "The old man found a map.",
    "the cat[Speech][Hu3][Text]a dog, 42 times!",
    "[Speech][St9][Pi63][Hu0][St99][Text]And Bob saw a red ball.",
]


def test_transformers_autotokenizer_agrees(spirit_tokenizer_dir):
    """Stock transformers: the same ids as SpiritTokenizer, and decode(encode(s)) == s (no space after markers)."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(spirit_tokenizer_dir))
    tok = SpiritTokenizer(spirit_tokenizer_dir)
    for s in CANONICAL:
        ids = hf(s)["input_ids"]
        assert ids == tok.encode(s, bos=True), s
        assert hf.decode(ids, skip_special_tokens=True) == s == tok.decode(ids)
    cfg = json.loads((spirit_tokenizer_dir / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["add_eos_token"] is False
    assert len(hf) == tok.vocab_size == tok.sp.get_piece_size()
    # Fillers: looked up by name, decoded by name, never produced by encoding their name.
    last = tok.vocab_size - 1
    assert hf.convert_tokens_to_ids(f"[Madeuptoken{last}]") == last and hf.decode([last]) == f"[Madeuptoken{last}]"
    assert last not in hf(f"[Madeuptoken{last}]")["input_ids"] and last not in tok.encode(f"[Madeuptoken{last}]")


def test_an_extended_tokenizer_extends_to_itself(spirit_tokenizer_dir, tmp_path):
    """A SpiRit tokenizer (an export's, a released model's) is a valid base: rebuilding it changes nothing."""
    again = build_tokenizer(spirit_tokenizer_dir, tmp_path / "again", "expressive")
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "spirit_tokenizer.json"):
        assert (again / name).read_bytes() == (spirit_tokenizer_dir / name).read_bytes(), name
    # EXPRESSIVE narrows to BASE (pitch and style become fillers); BASE does not widen to EXPRESSIVE.
    base = build_tokenizer(spirit_tokenizer_dir, tmp_path / "base", "base")
    assert SpiritTokenizer(base).flavor == "base"
    with pytest.raises(ValueError, match=r"piece '\[Madeuptoken\d+\]' at id \d+, where SPEC's EXPRESSIVE layout has "
                                         r"'\[Pi0\]'"):
        build_tokenizer(base, tmp_path / "wide", "expressive")
    assert not (tmp_path / "wide").exists()


def test_fillers_of_another_type_are_rewritten_unused(spirit_tokenizer_dir, tmp_path):
    """A released tokenizer may hold its fillers as pieces sentencepiece emits; rebuilding makes them UNUSED."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = load_model_proto(spirit_tokenizer_dir)
    for p in proto.pieces:
        if p.piece.startswith("[Madeuptoken"):
            p.type = sp_pb2.ModelProto.SentencePiece.USER_DEFINED
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "tokenizer.model").write_bytes(proto.SerializeToString())
    tok = SpiritTokenizer(tmp_path / "release")  # the names are SPEC's: it loads
    last = tok.vocab_size - 1
    assert last in tok.encode(f"[Madeuptoken{last}]")
    fixed = build_tokenizer(tmp_path / "release", tmp_path / "fixed", "expressive")
    assert (fixed / "tokenizer.model").read_bytes() == (spirit_tokenizer_dir / "tokenizer.model").read_bytes()
    assert last not in SpiritTokenizer(fixed).encode(f"[Madeuptoken{last}]")


def test_a_wrong_layout_is_refused_naming_the_first_bad_piece(spirit_tokenizer_dir):
    proto = load_model_proto(spirit_tokenizer_dir)
    base = [p.piece for p in proto.pieces].index("[Text]")
    proto.pieces[base + 40].piece = "[Hu999]"  # [Hu38]'s place
    with pytest.raises(ValueError, match=rf"piece '\[Hu999\]' at id {base + 40}, where SPEC's EXPRESSIVE layout "
                                         r"has '\[Hu38\]'"):
        extend_model_proto(proto)


def test_partial_clash_is_rejected(base_spm):
    proto = load_model_proto(base_spm)
    p = proto.pieces.add()
    p.piece = "[Pi7]"
    with pytest.raises(ValueError, match=r"SpiRit piece '\[Pi7\]' at id 600, before \[Text\]"):
        extend_model_proto(proto)


def test_a_base_tokenizer_refuses_pitch_and_style(base_spm, tmp_path):
    tok = SpiritTokenizer(build_tokenizer(base_spm, tmp_path / "base", "base"))
    assert tok.vocab_size == tok.vocab.export_size == tok.sp.get_piece_size()
    assert tok.encode("[Speech][Hu3]") == [tok.vocab.speech_id, tok.vocab.unit_id(HUBERT, 3)]
    for s in ("[Speech][Pi20]", "[St5]"):
        with pytest.raises(ValueError, match="which a BASE tokenizer does not hold"):
            tok.encode(s)
    with pytest.raises(ValueError, match="a BASE vocabulary has no pitch units"):
        tok.vocab.unit_id(PITCH, 3)
    with pytest.raises(ValueError, match="cannot be used as EXPRESSIVE"):
        SpiritTokenizer(tmp_path / "base", "expressive")


def test_bad_base_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_tokenizer(tmp_path / "missing.model", tmp_path / "out")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 3)
    with pytest.raises(ValueError, match="junk.model is not a sentencepiece model"):
        build_tokenizer(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli(base_spm, tmp_path):
    out = tmp_path / "tok"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools/preprocess/make_tokenizer.py"), "--base-model", str(base_spm),
         "--flavor", "expressive", "--out", str(out)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "flavor expressive" in r.stdout and (out / "tokenizer.model").is_file()
    assert json.loads((out / "spirit_tokenizer.json").read_text())["flavor"] == "expressive"
    r = subprocess.run(
        [sys.executable, "-m", "megatron_spirit.cli.make_tokenizer", "--base-model", str(base_spm),
         "--flavor", "tiny", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert r.returncode == 2 and "invalid choice: 'tiny'" in r.stderr
    r = subprocess.run(  # an EXPRESSIVE tokenizer narrowed to BASE (the default flavor)
        [sys.executable, "-m", "megatron_spirit.cli.make_tokenizer", "--base-model", str(out), "--out",
         str(tmp_path / "y")], capture_output=True, text=True,
    )
    assert r.returncode == 0 and "503 SpiRit pieces + 177 fillers" in r.stdout, r.stderr
    r = subprocess.run(  # and not widened back
        [sys.executable, "-m", "megatron_spirit.cli.make_tokenizer", "--base-model", str(tmp_path / "y"),
         "--flavor", "expressive", "--out", str(tmp_path / "z")], capture_output=True, text=True,
    )
    assert r.returncode == 2 and "already holds SpiRit pieces, not in SPEC's layout" in r.stderr
