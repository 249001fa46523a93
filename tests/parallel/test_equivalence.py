"""Same initial weights and batches: every TP/PP/VPP/SP/DP/distributed-optimizer layout trains like TP1/PP1.

One launch of real processes (gloo, fp32, CPU) per world size; inside it the reference (TP1/PP1, data-parallel
over the world) and every layout of that world run one after another (see workers.equivalence), each layout's
outcome recorded, so each layout is its own test id and a failing one hides no other. Two Adam steps (lr 1e-4)
through megatron-core's get_forward_backward_func with several micro-batches; weights gathered to compare.
Layouts with DP=1 (TP2 at world 2, TP2×PP2 at world 4) matching the DP=world reference also show that data
parallelism leaves the result unchanged. The one-process launch runs everything that needs no peers.
"""
import pytest

from megatron_spirit.parallel.launch import run_ranks

TOL = 1e-5

#: World 2: TP2, TP2+SP, PP2 (8 micro-batches, 1F1B), PP2×VPP2 (interleaved), DP2 with the distributed optimizer
#: (plain, and with gradient reduce-scatter overlapped with backward); full and selective activation recompute.
TWO = [
    dict(tp=2),
    dict(tp=2, sp=True),
    dict(pp=2),
    dict(pp=2, vpp=2),
    dict(distributed_optimizer=True),
    dict(distributed_optimizer=True, overlap_grad_reduce=True),
    dict(tp=2, sp=True, recompute="full"),
    dict(pp=2, recompute="selective"),
]
#: World 4: TP2×PP2 with and without SP, and DP2 × (TP2+SP | PP2) with the distributed optimizer.
FOUR = [
    dict(tp=2, pp=2),
    dict(tp=2, pp=2, sp=True),
    dict(tp=2, sp=True, distributed_optimizer=True),
    dict(pp=2, distributed_optimizer=True),
]
FLAGS = {"sp": "sp", "distributed_optimizer": "distopt", "overlap_grad_reduce": "overlap"}


def layout_id(layout: dict, world: int) -> str:
    """``tp2-pp1-dp1-sp``, ``tp1-pp2-dp1-vpp2``, ``tp1-pp1-dp2-distopt``, ``tp2-pp1-dp1-sp-recompute_full``."""
    tp, pp = layout.get("tp", 1), layout.get("pp", 1)
    parts = [f"tp{tp}", f"pp{pp}", f"dp{world // (tp * pp)}"]
    parts += [f"vpp{layout['vpp']}"] if layout.get("vpp") else []
    parts += [short for key, short in FLAGS.items() if layout.get(key)]
    parts += [f"recompute_{layout['recompute']}"] if layout.get("recompute") else []
    return "-".join(parts)


def _launch(world: int, layouts: list[dict]) -> dict:
    report = run_ranks("tests.parallel.workers:equivalence", world, args=("tiny-gqa", layouts), timeout=600)[0]
    assert [item["layout"] for item in report["layouts"]] == layouts
    return report


@pytest.fixture(scope="module")
def two_process():
    return _launch(2, TWO)


@pytest.fixture(scope="module")
def four_process():
    return _launch(4, FOUR)


def _check(report: dict, layout: dict) -> None:
    (item,) = [i for i in report["layouts"] if i["layout"] == layout]
    assert item["error"] is None, f"{layout} raised:\n{item['error']}"
    assert item["moved"] > 10 * TOL, "the optimizer step did not move the weights"
    for a, b in zip(item["losses"], report["reference"]):
        assert abs(a - b) <= TOL, (item["losses"], report["reference"])
    assert item["max_weight_diff"] <= TOL, item["max_weight_diff"]


# Under xdist (`make test`: -n 2 --dist loadgroup) the tests of one launch share a worker, so each launch runs once.
@pytest.mark.parametrize("world", [pytest.param(w, marks=pytest.mark.xdist_group(f"equivalence-{w}")) for w in (2, 4)])
def test_reference_stages_are_seeded_apart(world, request):
    report = request.getfixturevalue({2: "two_process", 4: "four_process"}[world])
    assert report["stage_layers_identical"] is False  # stages are seeded apart (seed + 100 × PP rank)
    assert len(report["reference"]) == 2


@pytest.mark.xdist_group("equivalence-2")
@pytest.mark.parametrize("layout", TWO, ids=[layout_id(x, 2) for x in TWO])
def test_two_process_layout(two_process, layout):
    _check(two_process, layout)


@pytest.mark.xdist_group("equivalence-4")
@pytest.mark.parametrize("layout", FOUR, ids=[layout_id(x, 4) for x in FOUR])
def test_four_process_layout(four_process, layout):
    _check(four_process, layout)


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
