"""Distributed-optimizer state saved by range: bounded memory, writes spread over the DP ranks, exact reload.

Allocations are counted op by op (megatron_spirit.testing.allocations), not read from RSS, so the bounds are
deterministic. The former form (every parameter's state gathered on every DP rank) is measured beside it: the
bound below is one it cannot meet.
"""
import math

import pytest
import torch

from megatron_spirit.checkpoint.optimizer_state import flat_range_boxes
from megatron_spirit.parallel.launch import run_ranks


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (4, 1, 3), (1,), (), (5, 6)])
def test_every_flat_range_is_covered_by_contiguous_boxes_in_order(shape):
    n = math.prod(shape)
    t = torch.arange(n).view(shape)
    for start in range(n + 1):
        for end in range(start, n + 1):
            boxes = flat_range_boxes(shape, start, end)
            assert len(boxes) <= max(1, 2 * len(shape) - 1)
            got = []
            for offset, size, flat in boxes:
                values = t[tuple(slice(o, o + s) for o, s in zip(offset, size))].reshape(-1).tolist()
                assert values[0] == flat
                got += values
            assert got == list(range(start, end)), (start, end, boxes)


def test_dp2_save_allocates_under_0_6_of_the_shard_state_and_both_ranks_write_half(tmp_path):
    ranks = run_ranks("tests.checkpoint.workers:save_allocations", 2, args=(str(tmp_path),), timeout=300)
    total = sum(r["ranges_written"] for r in ranks)
    for rank, r in enumerate(ranks):
        state = r["state_bytes"]  # fp32 param + exp_avg + exp_avg_sq of the rank's (TP/PP-local) model
        assert r["ranges_peak"] <= 0.6 * state, (rank, r)
        assert r["gathered_peak"] >= 1.0 * state, (rank, r)  # the former form: the whole state on every rank
        assert abs(r["ranges_written"] - total / 2) <= 0.2 * total / 2, (rank, r)
        assert r["ranges_load_peak"] <= 0.1 * state, (rank, r)  # loaded into the optimizer's own tensors
        assert r["ranges_loads_exactly"] and r["gathered_loads_exactly"], (rank, r)
    assert total >= ranks[0]["state_bytes"]  # everything was written, once
    assert min(r["gathered_written"] for r in ranks) == 0  # the former form: one DP rank wrote it all


def test_state_saved_by_range_at_dp4_loads_at_tp2_dp2_as_the_gathered_form_does(tmp_path):
    """Both TP and DP change: every box is read out of other ranks' chunks (the trainer's tests cover DP2 → PP2)."""
    run_ranks("tests.checkpoint.workers:save_both_forms", 4, args=(str(tmp_path), 1), timeout=300)
    ranks = run_ranks("tests.checkpoint.workers:load_both_forms", 4, args=(str(tmp_path), 2), timeout=300)
    assert sum(r["values"] for r in ranks) > 0
    for rank, r in enumerate(ranks):
        assert r["nonzero"] and r["equal"], (rank, r)
