"""Bad input fails with a clear error before anything is written; the CLI turns errors into exit code 2."""
from __future__ import annotations

import json
import shutil

import pytest


def _nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary folder left"


@pytest.fixture
def mha_copy(tmp_path, hf_models):
    folder = tmp_path / "hf"
    shutil.copytree(hf_models["mha"][0], folder)
    return folder


def _convert(hf, tok, out, **kw):
    from megatron_spirit.convert.hf_to_megatron import hf_to_megatron

    return hf_to_megatron(hf, tok, out, progress=False, **kw)


def test_missing_shard(tmp_path, mha_copy, spirit_tokenizer_dir):
    shard = sorted(mha_copy.glob("model-*.safetensors"))[1]
    shard.unlink()
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=f"missing: {shard.name}"):
        _convert(mha_copy, spirit_tokenizer_dir, out)
    _nothing_written(out)


def test_shapes_not_matching_named_or_own_config(tmp_path, mha_copy, spirit_tokenizer_dir):
    from megatron_spirit.model.config import get_model_config

    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"does not match model config 'tiny': ffn_hidden_size: config 'tiny' has 176"):
        _convert(mha_copy, spirit_tokenizer_dir, out, model_cfg=get_model_config("tiny"))
    config = json.loads((mha_copy / "config.json").read_text())
    config["intermediate_size"] = 128  # the config now lies about the tensors
    (mha_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"gate_proj.weight has shape \[96, 64\], expected \[128, 64\]"):
        _convert(mha_copy, spirit_tokenizer_dir, out)
    _nothing_written(out)


def test_tokenizer_of_another_base_vocabulary(tmp_path, hf_models, llama_sized_spm):
    from megatron_spirit.tokenizer.build import build_tokenizer

    tok = build_tokenizer(llama_sized_spm, tmp_path / "tok32k", "base")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"\(BASE: 32000 base pieces, 32512 in all\) does not fit the checkpoint .* "
                                         r"\(vocab_size 600\)"):
        _convert(hf_models["gqa"][0], tok, out)
    _nothing_written(out)


def test_tp_not_dividing_heads(tmp_path, hf_models, spirit_tokenizer_dir):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="tp=3 must divide num_attention_heads=4"):
        _convert(hf_models["gqa"][0], spirit_tokenizer_dir, out, tp=3)
    _nothing_written(out)


def test_export_errors(tmp_path, converted, hf_models, llama_sized_spm):
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf
    from megatron_spirit.model.config import get_model_config
    from megatron_spirit.tokenizer.build import build_tokenizer

    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="not a megatron-core distributed checkpoint"):
        megatron_to_hf(hf_models["gqa"][0], out, progress=False)
    with pytest.raises(ValueError, match=r"does not match the model config: .*linear_fc1.weight has shape \[2, 192, 64\]"):
        megatron_to_hf(converted["gqa"], out, model_cfg=get_model_config("tiny"), progress=False)
    tok = build_tokenizer(llama_sized_spm, tmp_path / "tok32k", "base")
    with pytest.raises(ValueError, match="base vocabulary of 32000 but the checkpoint was made with 600"):
        megatron_to_hf(converted["gqa"], out, tokenizer_dir=tok, progress=False)
    _nothing_written(out)


def test_cli_round_trip_and_error_exit(tmp_path, hf_models, spirit_tokenizer_dir, capsys):
    from megatron_spirit.cli.convert import main

    meg, back = tmp_path / "meg", tmp_path / "back"
    args = ["hf-to-megatron", "--hf", str(hf_models["gqa"][0]), "--tokenizer", str(spirit_tokenizer_dir),
            "--out", str(meg), "--tp", "2", "--pp", "2", "--rope-base", "10000", "--no-progress"]
    assert main(args) == 0
    assert main(["megatron-to-hf", "--ckpt", str(meg), "--out", str(back), "--dtype", "bf16",
                 "--max-shard-size", "100KB", "--no-progress"]) == 0
    index = json.loads((back / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # several shards
    assert json.loads((back / "config.json").read_text())["torch_dtype"] == "bfloat16"
    capsys.readouterr()
    args[args.index("--tp") + 1] = "3"
    assert main(args) == 2
    assert "spirit-convert hf-to-megatron: error: tp=3 must divide" in capsys.readouterr().err


def test_unknown_tensor_is_not_silently_dropped(tmp_path, mha_copy, spirit_tokenizer_dir):
    import torch
    from safetensors.torch import save_file

    save_file({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, str(mha_copy / "extra.safetensors"))
    index_file = mha_copy / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    index["weight_map"]["model.layers.0.self_attn.q_proj.bias"] = "extra.safetensors"
    index_file.write_text(json.dumps(index))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="does not know .*q_proj.bias"):
        _convert(mha_copy, spirit_tokenizer_dir, out)
    _nothing_written(out)
