"""HF → Megatron → (megatron-core at several TP/PP) → HF, on tiny random LLaMA models (MHA and GQA)."""
from __future__ import annotations

import json

import pytest
import torch

from .conftest import VOCAB

LAYOUTS_2 = [(1, 1), (2, 1), (1, 2)]  # one 2-process launch (DP fills the rest)
LAYOUTS_4 = [(2, 2)]  # one 4-process launch, which also saves the mha model again through megatron-core


def _hf_state(folder) -> dict:
    from megatron_spirit.convert.hf_checkpoint import HFCheckpoint

    ckpt = HFCheckpoint(folder)
    return {name: ckpt.get(name) for name in ckpt.names}


def _assert_original_tensors_identical(original: dict, exported: dict) -> None:
    assert set(original) == set(exported)
    for name, tensor in original.items():
        got = exported[name]
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            got = got[: tensor.shape[0]]
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name


@pytest.fixture(scope="module")
def exported(tmp_path_factory, converted):
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf
    from megatron_spirit.parallel import cpu

    root = tmp_path_factory.mktemp("exported")
    with cpu.compat():  # module fixtures are set up before the per-test cpu_mode
        return {name: megatron_to_hf(ckpt, root / name, progress=False) for name, ckpt in converted.items()}


def test_checkpoint_is_megatron_core_format_with_info(converted, spirit_tokenizer_dir):
    from megatron.core import dist_checkpointing

    from megatron_spirit.convert import layout as L
    from megatron_spirit.checkpoint.info import read_info

    ckpt = converted["gqa"]
    assert json.loads((ckpt / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
    meta = dist_checkpointing.load_tensors_metadata(str(ckpt))
    assert tuple(meta[L.EMBEDDING].global_shape) == (1280, 64)  # 600 + 667 SpiRit ids + fillers = 1280 (128·tp=256)
    assert tuple(meta[L.QKV].global_shape) == (2, (4 + 2 * 2) * 16, 64)
    assert tuple(meta[L.FC1].global_shape) == (2, 2 * 96, 64)
    info = read_info(ckpt)
    assert info["model_config"]["rope_base"] == 10000.0 and info["vocab"]["padded_size"] == 1280
    assert read_info(converted["mha"])["model_config"]["rope_base"] == 100000.0  # the recipe's default
    assert (ckpt / "tokenizer" / "tokenizer.model").read_bytes() == (spirit_tokenizer_dir / "tokenizer.model").read_bytes()


def test_round_trip_is_bit_identical_and_new_rows_are_seeded(hf_models, converted, exported):
    from megatron_spirit.tokenizer.vocab import SpiritVocab

    for name, (folder, _) in hf_models.items():
        back = _hf_state(exported[name])
        _assert_original_tensors_identical(_hf_state(folder), back)
        export_rows = SpiritVocab(VOCAB, "expressive").export_size
        emb, out = back["model.embed_tokens.weight"], back["lm_head.weight"]
        assert emb.shape[0] == out.shape[0] == export_rows == 1280
        new = emb[VOCAB:]
        assert new.abs().min() > 0 and 0.01 < new.std() < 0.03  # N(0, 0.02²) rows, not zeros or copies
        assert not torch.equal(emb[VOCAB:], out[VOCAB:])
    # Same seed, same new rows whatever the model: they depend on (seed, rows, hidden) only.
    a, b = (_hf_state(exported[n])["model.embed_tokens.weight"][VOCAB:] for n in ("mha", "gqa"))
    assert torch.equal(a, b)


def test_exported_folder_loads_in_stock_transformers_and_generates(exported):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = exported["mha"]
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == 1280 and config["rope_theta"] == 100000.0
    assert AutoConfig.from_pretrained(folder).vocab_size == 1280
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok("the cat[Speech][Hu3][Hu7]", return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id == 1
    assert enc["input_ids"][0, -2:].tolist() == [VOCAB + 2 + 3, VOCAB + 2 + 7]
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, enc["input_ids"].shape[1] + 4)
    json.loads((folder / "generation_config.json").read_text())


@pytest.fixture(scope="module")
def tokens():
    from megatron_spirit.tokenizer.vocab import SpiritVocab

    full = SpiritVocab(VOCAB, "expressive").full_size
    gen = torch.Generator().manual_seed(0)
    return {"gqa": torch.randint(0, VOCAB, (2, 16), generator=gen),  # the original model knows only these
            "mha": torch.randint(0, full, (2, 16), generator=gen)}  # SpiRit ids too (exported model as reference)


@pytest.fixture(scope="module")
def hf_logits(hf_models, exported, tokens):
    """{model: logits over its known columns}: the HF original (gqa) or the exported model with SpiRit rows (mha)."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    references = {
        "gqa": (LlamaForCausalLM.from_pretrained(hf_models["gqa"][0]), VOCAB),
        "mha": (AutoModelForCausalLM.from_pretrained(exported["mha"]), 1280),
    }
    with torch.no_grad():
        out = {name: model(tokens[name]).logits[..., :columns] for name, (model, columns) in references.items()}
    for name, logits in out.items():
        assert logits.abs().max() > 1.0, name  # logits large enough for 1e-4 to mean something
    return out


def _cases(hf_models, converted) -> dict:
    from megatron_spirit.tokenizer.vocab import SpiritVocab

    full = SpiritVocab(VOCAB, "expressive").full_size
    cases = {name: (converted[name], hf_models[name][0], full, True) for name in ("gqa", "mha")}
    # A run padding the vocabulary more than the converter did (1536 rows, checkpoint 1280) still loads.
    cases["gqa-repadded"] = (converted["gqa"], hf_models["gqa"][0], 1536, False)
    return cases


def _launch(world, layouts, hf_models, converted, tokens, save=None) -> dict:
    """One launch for all of a world's layouts and cases: {"logits": {(tp, pp, case): (logits, error)}, ...}."""
    from megatron_spirit.parallel.launch import run_ranks

    merged = {"logits": {}, "save_error": None}
    for rank_result in run_ranks("tests.convert.workers:layouts_logits", world,
                                 args=(layouts, _cases(hf_models, converted), tokens, save, "mha"), timeout=600):
        for key, (logits, error) in rank_result["logits"].items():
            if logits is not None or key not in merged["logits"]:
                merged["logits"][key] = (logits, error)
        merged["save_error"] = rank_result["save_error"]
    return merged


@pytest.fixture(scope="module")
def launch_2(hf_models, converted, tokens):
    return _launch(2, LAYOUTS_2, hf_models, converted, tokens)


@pytest.fixture(scope="module")
def launch_4(tmp_path_factory, hf_models, converted, tokens):
    trained = tmp_path_factory.mktemp("trained") / "tp2pp2"
    return dict(_launch(4, LAYOUTS_4, hf_models, converted, tokens, save=str(trained)), trained=trained)


CASES = ("gqa", "mha", "gqa-repadded")
# One id per layout and case; under xdist (-n 2 --dist loadgroup) the ids of one launch share a worker.
LOGIT_CASES = [
    pytest.param(world, tp, pp, case, id=f"tp{tp}-pp{pp}-dp{world // (tp * pp)}-{case}",
                 marks=pytest.mark.xdist_group(f"convert-logits-{world}"))
    for world, layouts in ((2, LAYOUTS_2), (4, LAYOUTS_4)) for tp, pp in layouts for case in CASES
]


@pytest.mark.parametrize("world, tp, pp, case", LOGIT_CASES)
def test_megatron_logits_match_hf(world, tp, pp, case, hf_logits, request):
    logits, error = request.getfixturevalue(f"launch_{world}")["logits"][(tp, pp, case)]
    assert error is None, f"tp={tp} pp={pp} {case} raised:\n{error}"
    assert logits is not None and logits.shape[-1] == (1536 if case == "gqa-repadded" else 1280)
    want = hf_logits[case.split("-")[0]]
    diff = (logits[..., : want.shape[-1]] - want).abs().max().item()
    assert diff < 1e-4, f"max |Δlogit| = {diff}"


@pytest.mark.xdist_group("convert-logits-4")
def test_checkpoint_megatron_core_saved_at_tp2_pp2_exports_bit_identically(tmp_path, launch_4, hf_models, converted,
                                                                            spirit_tokenizer_dir):
    """A checkpoint megatron-core itself saved at TP2×PP2 (as training would) exports back bit-identically."""
    from megatron_spirit.checkpoint.info import model_config_from_info, read_info
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf

    assert launch_4["save_error"] is None, launch_4["save_error"]
    mha_cfg = model_config_from_info(read_info(converted["mha"]))
    back = megatron_to_hf(launch_4["trained"], tmp_path / "trained_hf", tokenizer_dir=spirit_tokenizer_dir,
                          model_cfg=mha_cfg, progress=False)
    _assert_original_tensors_identical(_hf_state(hf_models["mha"][0]), _hf_state(back))
