"""docs/spec.md §1: the exact ids of the SpiRit tokens on a 32000-piece LLaMA-2-shaped base."""
import pytest

from megatron_spirit.tokenizer.build import build_tokenizer
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
from megatron_spirit.tokenizer.vocab import HUBERT, PITCH, STYLE, SpiritVocab, padded_vocab_size

SPEC_IDS = {"[Text]": 32000, "[Speech]": 32001, "[Hu0]": 32002, "[Hu500]": 32502, "[Pi0]": 32503,
            "[Pi63]": 32566, "[St0]": 32567, "[St99]": 32666, "[TEXT]": 32000, "[SPEECH]": 32001}


def test_layout_arithmetic():
    v = SpiritVocab(32000, "expressive")
    assert (v.text_id, v.speech_id) == (32000, 32001)
    assert v.unit_id(HUBERT, 0) == 32002 and v.unit_id(HUBERT, 500) == 32502
    assert v.unit_id(PITCH, 0) == 32503 and v.unit_id(STYLE, 0) == 32567 and v.unit_id(STYLE, 99) == 32666
    assert v.full_size == 32768 and SpiritVocab(32000, "base").full_size == 32512  # fillers up to the export size
    assert v.pieces()[667] == "[Madeuptoken32667]" and v.pieces()[-1] == "[Madeuptoken32767]"
    assert SpiritVocab(32000, "base").pieces()[503:] == [f"[Madeuptoken{i}]" for i in range(32503, 32512)]
    assert SpiritVocab(32000, "base").size == 32503
    assert SpiritVocab(32000, "base").export_size == 32512
    assert SpiritVocab(32000, "expressive").export_size == 32768
    assert v.stream_of(32502) is HUBERT and v.stream_of(32503) is PITCH and v.stream_of(31999) is None
    assert SpiritVocab(32000, "base").stream_of(32503) is None and v.stream_of(32667) is None
    for tok, i in SPEC_IDS.items():
        assert v.token_to_id[tok] == i


def test_megatron_padding():
    assert padded_vocab_size(32667, 128, 1) == 32768
    assert padded_vocab_size(32503, 128, 1) == 32512
    assert padded_vocab_size(32667, 128, 8) == 32768
    assert padded_vocab_size(32667, 128, 3) == 33024


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_extended_llama_sized_model_has_spec_ids(llama_sized_spm, tmp_path, flavor):
    out = build_tokenizer(llama_sized_spm, tmp_path / flavor, flavor)
    tok = SpiritTokenizer(out)
    assert tok.vocab.base_size == 32000 and tok.flavor == flavor
    assert tok.vocab_size == tok.vocab.export_size == {"base": 32512, "expressive": 32768}[flavor]
    held = ("[Text]", "[Speech]", "[Hu0]", "[Hu500]", "[TEXT]", "[SPEECH]")
    for piece, want in SPEC_IDS.items():
        if flavor == "expressive" or piece in held:
            assert tok.encode(piece) == [want], piece
    for piece in ("[Text]", "[Speech]", "[Hu0]", "[Hu500]", "[Pi0]", "[St0]", "[St99]"):
        if flavor == "expressive" or piece in held:
            assert tok.sp.piece_to_id(piece) == SPEC_IDS[piece]
    assert tok.sp.id_to_piece(tok.vocab_size - 1) == f"[Madeuptoken{tok.vocab_size - 1}]"
    # Base ids are untouched.
    assert (tok.bos_id, tok.eos_id, tok.sp.unk_id()) == (1, 2, 0)


@pytest.mark.parametrize("bad", ["tiny", "", "EXPRESSIVE"])
def test_unknown_flavor_is_an_error(bad):
    with pytest.raises(ValueError, match="unknown flavor"):
        SpiritVocab(32000, bad)


def test_unit_out_of_range():
    v = SpiritVocab(32000)
    with pytest.raises(ValueError, match="hubert unit 501 out of range"):
        v.unit_id(HUBERT, 501)
    with pytest.raises(ValueError, match="pitch unit -1 out of range"):
        v.unit_id(PITCH, -1)
