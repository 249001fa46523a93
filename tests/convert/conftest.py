"""Tiny random HF LLaMA models (MHA and GQA) over the session's small SpiRit tokenizer, and their conversions."""
from __future__ import annotations

import pytest
import torch

VOCAB = 600  # the base_spm fixture's size: the tokenizer's base vocabulary must equal the checkpoint's
CASES = {
    # name: (heads, key/value heads, save format); hidden 64, 2 layers, ffn 96
    "mha": (4, 4, "safetensors-sharded"),
    "gqa": (4, 2, "bin"),
}


def make_hf_model(path, heads: int, kv_heads: int, fmt: str, seed: int):
    """A random LlamaForCausalLM whose every weight (norms included) is far from its init, saved as ``fmt``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=kv_heads, max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.15 * noise)
    if fmt == "bin":
        model.save_pretrained(path, safe_serialization=False)
    else:
        model.save_pretrained(path, max_shard_size="60KB")
    return model


@pytest.fixture(autouse=True)
def cpu_mode():
    """These tests run megatron-core in the pytest process: switch the CUDA-less mode on for each (and off)."""
    from megatron_spirit.parallel import cpu

    with cpu.compat():
        yield


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """{case: (folder, model)} for the MHA (sharded safetensors) and GQA (pytorch_model.bin) models."""
    root = tmp_path_factory.mktemp("hf")
    return {
        name: (root / name, make_hf_model(root / name, heads, kv, fmt, seed=i + 1))
        for i, (name, (heads, kv, fmt)) in enumerate(CASES.items())
    }


@pytest.fixture(scope="session")
def converted(tmp_path_factory, hf_models, spirit_tokenizer_dir):
    """{case: megatron checkpoint}: MHA with the recipe's default RoPE base (100000), GQA keeping 10000; tp=2."""
    from megatron_spirit.convert.hf_to_megatron import hf_to_megatron
    from megatron_spirit.parallel import cpu

    root = tmp_path_factory.mktemp("meg")
    out = {}
    with cpu.compat():  # session fixtures are set up before the per-test cpu_mode
        for name, (folder, _) in hf_models.items():
            rope = None if name == "mha" else 10000.0
            out[name] = hf_to_megatron(folder, spirit_tokenizer_dir, root / name, tp=2, pp=1, rope_base=rope,
                                       progress=False)
    return out
