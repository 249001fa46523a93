"""The training state's on-disk form: the common-state keys checkpoints already hold, read back typed."""
import pytest

from megatron_spirit.checkpoint.state import Layout, TrainingState


def test_common_state_keys_and_round_trip():
    state = TrainingState(step=30, consumed_samples=240, skipped=1, padded_vocab=1280, layout=Layout(2, 1, 2),
                          distributed_optimizer=True, scheduler={"num_steps": 30}, optimizer_common={"opt0": 30})
    common = state.to_common()
    assert common == {"step": 30, "consumed_samples": 240, "skipped": 1, "padded_vocab": 1280,
                      "layout": {"tp": 2, "pp": 1, "dp": 2}, "distributed_optimizer": True,
                      "scheduler": {"num_steps": 30}, "optimizer_common": {"opt0": 30}}
    assert TrainingState.from_common(dict(common, written_by_a_later_version=1)) == state


def test_missing_fields():
    old = TrainingState.from_common({"step": 5})
    assert old.consumed_samples is None and old.layout is None and old.skipped == 0
    with pytest.raises(ValueError, match="ckpt/iter_0000005: the common state has no 'step'"):
        TrainingState.from_common({"consumed_samples": 5}, "ckpt/iter_0000005")
