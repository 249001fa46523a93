"""Building the extended tokenizer: every piece one id, text round trips, Hugging Face loads it, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_spirit.synth.text import sentences
from megatron_spirit.tokenizer.build import build_tokenizer, extend_model_proto, load_model_proto
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
from megatron_spirit.tokenizer.vocab import new_tokens

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


def test_transformers_autotokenizer_agrees(spirit_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(spirit_tokenizer_dir))
    tok = SpiritTokenizer(spirit_tokenizer_dir)
    for s in [
        "[Hu30]",
        "[Speech][Hu3][Hu30][Hu500]",
        "[Text]the cat sat[Speech][Hu3][Hu7][Text]on the mat",
        "[St81][Hu78][Pi13][Hu42]",
        "The old man found a map.",
    ]:
        assert hf(s)["input_ids"] == tok.encode(s, bos=True), s
    cfg = json.loads((spirit_tokenizer_dir / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["add_eos_token"] is False
    assert cfg["tokenizer_class"] == "LlamaTokenizer"


def test_already_extended_base_is_rejected(spirit_tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match=r"already contains 667 SpiRit piece\(s\), e.g. '\[Text\]'"):
        build_tokenizer(spirit_tokenizer_dir / "tokenizer.model", tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_partial_clash_is_rejected(base_spm):
    proto = load_model_proto(base_spm)
    p = proto.pieces.add()
    p.piece = "[Pi7]"
    with pytest.raises(ValueError, match=r"\[Pi7\]"):
        extend_model_proto(proto)


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
    r = subprocess.run(
        [sys.executable, "-m", "megatron_spirit.cli.make_tokenizer", "--base-model", str(out), "--out",
         str(tmp_path / "y")], capture_output=True, text=True,
    )
    assert r.returncode == 2 and "already contains" in r.stderr
