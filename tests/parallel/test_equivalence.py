"""Same initial weights and batches: every TP/PP/VPP/SP/DP/distributed-optimizer layout trains like TP1/PP1.

Each test is one launch of real processes (gloo, fp32, CPU); inside it the reference (TP1/PP1, data-parallel
over the world) and several layouts run one after another (see workers.equivalence). Two Adam steps (lr 1e-4)
through megatron-core's get_forward_backward_func with several micro-batches; weights gathered to compare.
Layouts with DP=1 (TP2 at world 2, TP2×PP2 at world 4) matching the DP=world reference also show that data
parallelism leaves the result unchanged. The one-process launch runs everything that needs no peers.
"""
from megatron_spirit.parallel.launch import run_ranks

TOL = 1e-5


def check(report):
    assert report["stage_layers_identical"] is False  # stages are seeded apart (seed + 100 × PP rank)
    assert len(report["reference"]) == 2
    for item in report["layouts"]:
        name = item["layout"]
        assert item["moved"] > 10 * TOL, f"{name}: the optimizer step did not move the weights"
        for a, b in zip(item["losses"], report["reference"]):
            assert abs(a - b) <= TOL, (name, item["losses"], report["reference"])
        assert item["max_weight_diff"] <= TOL, (name, item["max_weight_diff"])


def test_one_process_sdpa_attention_and_bf16():
    """SDPA core attention == megatron's unfused attention; bf16 mixed precision tracks fp32 (one launch)."""
    ref, specs = run_ranks("tests.parallel.workers:single_process", 1, args=("tiny-gqa",), timeout=600)[0]
    assert specs["chosen"] == "local+sdpa"  # no GPU / Transformer Engine here
    assert specs["cores"] == ["SDPAttention", "DotProductAttention"]
    assert specs["logits_scale"] > 0.1
    assert specs["logits_diff"] <= TOL
    assert specs["grad_diff"] <= TOL
    assert specs["core_causal_diff"] <= TOL
    assert specs["core_mask_diff"] <= TOL
    assert specs["core_shape"] == (16, 2, 64)
    assert specs["core_groups_tested"] == (2, 4)  # GQA and MHA
    bf16 = ref["bf16"]
    for a, b in zip(bf16["losses"], ref["reference"]):
        assert abs(a - b) <= 2e-2, (bf16["losses"], ref["reference"])  # bf16 activations: ~3 significant digits
    assert bf16["max_weight_diff"] <= 1e-2  # weights are stored in bf16 (spacing ~4e-3 near 1)


def test_two_process_layouts():
    """TP2, TP2+SP, PP2 (8 micro-batches, 1F1B), PP2×VPP2 (interleaved), DP2 with the distributed optimizer
    (plain, and with gradient reduce-scatter overlapped with backward); full and selective activation recompute."""
    layouts = [
        dict(tp=2),
        dict(tp=2, sp=True),
        dict(pp=2),
        dict(pp=2, vpp=2),
        dict(distributed_optimizer=True),
        dict(distributed_optimizer=True, overlap_grad_reduce=True),
        dict(tp=2, sp=True, recompute="full"),
        dict(pp=2, recompute="selective"),
    ]
    report = run_ranks("tests.parallel.workers:equivalence", 2, args=("tiny-gqa", layouts), timeout=600)[0]
    assert [item["layout"] for item in report["layouts"]] == layouts
    check(report)


def test_four_process_layouts():
    """TP2×PP2 with and without SP, and DP2 × (TP2+SP | PP2) with the distributed optimizer."""
    layouts = [
        dict(tp=2, pp=2),
        dict(tp=2, pp=2, sp=True),
        dict(tp=2, sp=True, distributed_optimizer=True),
        dict(pp=2, distributed_optimizer=True),
    ]
    report = run_ranks("tests.parallel.workers:equivalence", 4, args=("tiny-gqa", layouts), timeout=600)[0]
    check(report)
