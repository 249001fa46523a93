"""The one FLOPs formula: model FLOPs (MFU's numerator) and the hardware FLOPs recompute adds."""
import pytest

from megatron_spirit.model.config import get_model_config
from megatron_spirit.model.flops import flops_per_token
from megatron_spirit.training.metrics import StepStats


def test_model_flops_are_6n_plus_attention_and_ignore_recompute():
    m = get_model_config("spirit-7b")
    L, h, f, s, V = m.num_layers, m.hidden_size, m.ffn_hidden_size, 4096, 32768
    matmul_params = L * (4 * h * h + 3 * h * f) + h * V  # MHA q/k/v/o, SwiGLU, output layer
    want = 6 * matmul_params + 12 * L * h * s  # the usual 6N + 12·L·h·s (PaLM appendix B)
    assert flops_per_token(m, s, V) == want == pytest.approx(4.61e10, rel=1e-3)
    full, selective = flops_per_token(m, s, V, "full"), flops_per_token(m, s, V, "selective")
    assert full - want == (want - 6 * h * V) / 3  # one more forward of every layer, not of the logits
    assert selective - want == L * 4 * s * h  # the attention scores/values again


def test_grouped_query_attention_counts_fewer_key_value_flops():
    mha, gqa = get_model_config("tiny"), get_model_config("tiny", num_query_groups=2)
    d = mha.kv_channels
    removed = (mha.num_attention_heads - 2) * d  # k and v rows that GQA drops
    saved = 3 * mha.num_layers * 2 * mha.hidden_size * 2 * removed  # fwd+bwd of the k and v projections
    assert flops_per_token(mha, 128, 512) - flops_per_token(gqa, 128, 512) == saved


def test_log_line_mfu_counts_model_flops_and_hfu_the_recompute():
    stats = StepStats(step=10, loss=1.0, lr=1e-4, grad_norm=0.5, tokens=4000, seconds=2.0, skipped=0, memory_gb=1.0)
    # 2000 tokens/s × 1e9 model FLOPs over 2 GPUs = 1 TFLOP/s/GPU; peak 4 → MFU 25 %; 4/3 hardware → HFU 33.3 %
    line = stats.line(1e9, 2, 4.0, 4e9 / 3)
    assert "TFLOP/s/GPU 1.00" in line and "MFU 25.0%" in line and "HFU 33.3%" in line
    assert "HFU" not in stats.line(1e9, 2, 4.0, 1e9)  # no recompute: HFU = MFU, not repeated
    unknown = stats.line(1e9, 2, float("nan"), 4e9 / 3)
    assert "TFLOP/s/GPU 1.00" in unknown and "MFU" not in unknown and "HFU" not in unknown
