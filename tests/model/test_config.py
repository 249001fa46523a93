"""Named configs, validation, vocabulary padding and the TransformerConfig they produce (no processes needed)."""
import dataclasses

import pytest
import torch

from megatron_spirit.model.config import (
    NAMED_CONFIGS,
    ModelConfig,
    ParallelConfig,
    get_model_config,
    padded_vocab,
    transformer_config,
)
from megatron_spirit.tokenizer.vocab import SpiritVocab


def test_llama2_7b_matches_the_hf_parameter_count():
    # LLaMA-2-7B has 6,738,415,616 parameters with its 32000-token vocabulary.
    assert get_model_config("llama2-7b").num_parameters(32000) == 6_738_415_616
    # 13B: 13,015,864,320.
    assert get_model_config("llama2-13b").num_parameters(32000) == 13_015_864_320


def test_spirit_configs_differ_from_llama_only_in_rope_base():
    llama, spirit = get_model_config("llama2-7b"), get_model_config("spirit-7b")
    assert llama.rope_base == 10000.0 and spirit.rope_base == 100000.0
    assert dataclasses.replace(spirit, rope_base=10000.0, name="llama2-7b") == llama
    assert all(c.norm_eps == 1e-5 for c in NAMED_CONFIGS.values())


def test_overrides_and_errors_name_the_key():
    c = get_model_config("tiny", seq_length=128, rope_base=100000.0)
    assert (c.seq_length, c.rope_base, c.num_layers) == (128, 100000.0, 2)
    with pytest.raises(ValueError, match="unknown model config 'nope'"):
        get_model_config("nope")
    with pytest.raises(ValueError, match="seq_len"):
        get_model_config("tiny", seq_len=5)
    with pytest.raises(ValueError, match="num_query_groups"):
        get_model_config("tiny", num_query_groups=3)
    with pytest.raises(ValueError, match="hidden_size"):
        ModelConfig(2, 65, 128, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.hidden_size = 5


def test_parallel_config_validation():
    assert ParallelConfig(tp=2, pp=2).data_parallel_size(8) == 2
    with pytest.raises(ValueError, match="not divisible"):
        ParallelConfig(tp=2, pp=2).data_parallel_size(6)
    with pytest.raises(ValueError, match="sequence parallel"):
        ParallelConfig(sp=True)
    with pytest.raises(ValueError, match="vpp"):
        ParallelConfig(vpp=2)
    with pytest.raises(ValueError, match="recompute"):
        ParallelConfig(recompute="everything")
    with pytest.raises(ValueError, match="num_layers=2"):
        ParallelConfig(pp=4).check_model(get_model_config("tiny"))
    with pytest.raises(ValueError, match="num_query_groups=2"):
        ParallelConfig(tp=4).check_model(get_model_config("tiny-gqa"))


def test_vocab_padding_follows_the_tokenizer_and_tp():
    size = SpiritVocab(32000, "expressive").full_size  # 32768: every SpiRit piece and the fillers
    m = get_model_config("spirit-7b")
    assert padded_vocab(size, m, ParallelConfig()) == 32768
    assert padded_vocab(size, m, ParallelConfig(tp=8)) == 32768  # 32 × 1024
    assert padded_vocab(size, m, ParallelConfig(tp=3)) == 33024  # 86 × 384
    assert padded_vocab(300, get_model_config("tiny"), ParallelConfig(tp=2)) == 512


def test_transformer_config_is_llama_shaped():
    tc = transformer_config(get_model_config("tiny-gqa"), ParallelConfig(tp=2, pp=2, vpp=2, sp=True,
                                                                        recompute="full"), dtype="bf16")
    assert tc.hidden_dropout == 0.0 and tc.attention_dropout == 0.0
    assert tc.normalization == "RMSNorm" and tc.layernorm_epsilon == 1e-5
    assert tc.gated_linear_unit and tc.activation_func is torch.nn.functional.silu
    assert not tc.add_bias_linear and not tc.add_qkv_bias
    assert tc.num_query_groups == 2 and tc.kv_channels == 16
    assert (tc.tensor_model_parallel_size, tc.pipeline_model_parallel_size) == (2, 2)
    assert tc.virtual_pipeline_model_parallel_size == 2 and tc.sequence_parallel
    assert tc.params_dtype == torch.bfloat16 and tc.bf16 and tc.pipeline_dtype == torch.bfloat16
    assert tc.recompute_granularity == "full" and tc.recompute_method == "uniform"
    if not torch.cuda.is_available():
        assert tc.use_cpu_initialization and not tc.masked_softmax_fusion and not tc.batch_p2p_comm
    fp32 = transformer_config(get_model_config("tiny"), ParallelConfig())
    assert fp32.params_dtype == torch.float32 and not fp32.bf16 and fp32.num_query_groups == 4
    with pytest.raises(ValueError, match="dtype"):
        transformer_config(get_model_config("tiny"), ParallelConfig(), dtype="fp8")
