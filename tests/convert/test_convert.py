"""HF → Megatron → (megatron-core at several TP/PP) → HF, on tiny random LLaMA models (MHA and GQA)."""
from __future__ import annotations

import json

import pytest
import torch

from .conftest import VOCAB

LAYOUTS_2 = [(1, 1), (2, 1), (1, 2)]  # one 2-process launch (DP fills the rest)
LAYOUTS_4 = [(2, 2)]  # one 4-process launch


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

    from megatron_spirit.checkpoint.info import read_info
    from megatron_spirit.convert import layout as L

    ckpt = converted["gqa"]
    assert json.loads((ckpt / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
    meta = dist_checkpointing.load_tensors_metadata(str(ckpt))
    assert tuple(meta[L.EMBEDDING].global_shape) == (1280, 64)  # 600 + 667 SpiRit ids, padded to 128·tp=256
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


def test_megatron_logits_match_hf_at_every_layout_and_trained_checkpoint_exports(
    tmp_path, hf_models, converted, exported, spirit_tokenizer_dir
):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from megatron_spirit.checkpoint.info import model_config_from_info, read_info
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf
    from megatron_spirit.parallel.launch import run_ranks
    from megatron_spirit.tokenizer.vocab import SpiritVocab

    full = SpiritVocab(VOCAB, "expressive").full_size
    gen = torch.Generator().manual_seed(0)
    tokens = {"gqa": torch.randint(0, VOCAB, (2, 16), generator=gen),  # the original model knows only these
              "mha": torch.randint(0, full, (2, 16), generator=gen)}  # SpiRit ids too (exported model as reference)
    references = {
        "gqa": (LlamaForCausalLM.from_pretrained(hf_models["gqa"][0]), VOCAB),
        "mha": (AutoModelForCausalLM.from_pretrained(exported["mha"]), 1280),
    }
    cases = {name: (converted[name], hf_models[name][0], full, True) for name in ("gqa", "mha")}
    # A run padding the vocabulary more than the converter did (1536 rows, checkpoint 1280) still loads.
    cases["gqa-repadded"] = (converted["gqa"], hf_models["gqa"][0], 1536, False)
    trained = tmp_path / "trained_tp2pp2"
    results = {}  # one launch per world size, both models in each
    for world, layouts, save in ((2, LAYOUTS_2, None), (4, LAYOUTS_4, str(trained))):
        for rank_result in run_ranks(
            "tests.convert.workers:layouts_logits", world, args=(layouts, cases, tokens, save, "mha"),
            timeout=600,
        ):
            for key, logits in rank_result.items():
                if logits is not None:
                    results[key] = logits
    assert sorted(results) == sorted((tp, pp, n) for tp, pp in LAYOUTS_2 + LAYOUTS_4 for n in cases)
    assert results[(2, 2, "gqa-repadded")].shape[-1] == 1536 and results[(2, 2, "gqa")].shape[-1] == 1280
    for name, (ref_model, columns) in references.items():
        with torch.no_grad():
            want = ref_model(tokens[name]).logits[..., :columns]
        assert want.abs().max() > 1.0  # logits large enough for 1e-4 to mean something
        for (tp, pp, case), logits in results.items():
            if case.split("-")[0] == name:
                diff = (logits[..., :columns] - want).abs().max().item()
                assert diff < 1e-4, f"{name} at tp={tp} pp={pp}: max |Δlogit| = {diff}"

    # A checkpoint megatron-core itself saved at TP2×PP2 (as training would) exports back bit-identically.
    mha_cfg = model_config_from_info(read_info(converted["mha"]))
    back = megatron_to_hf(trained, tmp_path / "trained_hf", tokenizer_dir=spirit_tokenizer_dir, model_cfg=mha_cfg,
                          progress=False)
    _assert_original_tensors_identical(_hf_state(hf_models["mha"][0]), _hf_state(back))
