"""The HF ⇄ Megatron tensor mapping on hand-built tensors whose rows say where they came from."""
import pytest
import torch

from megatron_spirit.convert import layout as L
from megatron_spirit.model.config import ModelConfig, ParallelConfig

from .splits import pp_layers, tp_shard


def _rows_tagged(rows: int, tag: float, hidden: int = 3) -> torch.Tensor:
    """Row r holds tag + r in every column, so any reordering is visible."""
    return (tag + torch.arange(rows, dtype=torch.float32)).unsqueeze(1).repeat(1, hidden)


@pytest.mark.parametrize("heads,groups", [(4, 4), (8, 2), (4, 1)])
def test_qkv_is_grouped_per_query_group_and_round_trips(heads, groups):
    hd, hidden = 2, 3
    d = ModelConfig(1, heads * hd, 8, heads, groups)
    q, k, v = _rows_tagged(heads * hd, 1000), _rows_tagged(groups * hd, 2000), _rows_tagged(groups * hd, 3000)
    fused = L.qkv_to_megatron(q, k, v, d)
    assert fused.shape == ((heads + 2 * groups) * hd, hidden)
    per = heads // groups
    expected = []
    for g in range(groups):  # [q heads of g ; k of g ; v of g]
        expected += list(range(1000 + g * per * hd, 1000 + (g + 1) * per * hd))
        expected += list(range(2000 + g * hd, 2000 + (g + 1) * hd))
        expected += list(range(3000 + g * hd, 3000 + (g + 1) * hd))
    assert fused[:, 0].tolist() == [float(x) for x in expected]
    for a, b in zip(L.qkv_from_megatron(fused, d), (q, k, v)):
        assert torch.equal(a, b)


def test_fc1_gate_first_and_tp_splits_gate_and_up_separately():
    gate, up = _rows_tagged(4, 100), _rows_tagged(4, 200)
    fc1 = L.fc1_to_megatron(gate, up)
    assert fc1[:, 0].tolist() == [100, 101, 102, 103, 200, 201, 202, 203]
    assert tp_shard(L.FC1, fc1, 2, 0)[:, 0].tolist() == [100, 101, 200, 201]
    assert tp_shard(L.FC1, fc1, 2, 1)[:, 0].tolist() == [102, 103, 202, 203]
    g, u = L.fc1_from_megatron(fc1)
    assert torch.equal(g, gate) and torch.equal(u, up)


def test_tp_split_axes():
    w = torch.arange(24.0).reshape(4, 6)
    assert torch.equal(tp_shard(L.PROJ, w, 2, 1), w[:, 3:])  # row-parallel: columns
    assert torch.equal(tp_shard(L.QKV, w, 2, 1), w[2:])  # column-parallel: rows (whole groups)
    assert torch.equal(tp_shard(L.INPUT_NORM, w[0], 2, 1), w[0])  # replicated
    assert list(pp_layers(8, 4, 2)) == [4, 5]


def test_vocab_rows_extend_deterministically_and_trim():
    w = torch.randn(10, 4)
    a = L.extend_rows(w, 16, seed=3, salt=0, std=0.02)
    b = L.extend_rows(w, 16, seed=3, salt=0, std=0.02)
    c = L.extend_rows(w, 16, seed=3, salt=1, std=0.02)
    assert torch.equal(a[:10], w) and torch.equal(a, b) and not torch.equal(a[10:], c[10:])
    assert 0.005 < a[10:].std().item() < 0.05
    assert torch.equal(L.trim_rows(a, 12), a[:12])
    padded = L.trim_rows(w, 12)
    assert torch.equal(padded[:10], w) and not padded[10:].any()


def test_split_check_names_every_problem():
    d = ModelConfig(4, 64, 96, 4, 2, name="t")
    ParallelConfig(tp=2, pp=2).check_model(d)
    with pytest.raises(ValueError, match="tp=4 must divide num_attention_heads=4 and num_query_groups=2"):
        ParallelConfig(tp=4).check_model(d)
    with pytest.raises(ValueError, match="tp=4 must divide .*; pp×vpp = 3 must divide num_layers=4"):
        ParallelConfig(tp=4, pp=3).check_model(d)
