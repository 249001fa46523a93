"""Checkpoint folder life cycle: a save interrupted at any point never becomes the latest."""
from megatron_spirit.training.checkpoint_dir import CheckpointDir, step_of


def _save(cd, step, keep=None):
    tmp = cd.begin(step)
    (tmp / "weights").write_text(str(step))
    return cd.commit(step, keep_last=keep)


def test_latest_and_keep_last(tmp_path):
    cd = CheckpointDir(tmp_path)
    assert cd.latest() is None
    for s in (10, 20, 30):
        _save(cd, s, keep=2)
    assert cd.complete_steps() == [20, 30]
    assert cd.latest().name == "iter_0000030" and step_of(cd.latest()) == 30


def test_interrupted_save_is_not_latest(tmp_path):
    cd = CheckpointDir(tmp_path)
    _save(cd, 10)
    tmp = cd.begin(20)
    (tmp / "weights").write_text("half")  # killed before commit
    assert cd.latest().name == "iter_0000010"
    assert cd.clean_stale() == [tmp] and not tmp.exists()
    # A stale pointer to a folder without the marker falls back to the newest complete one.
    (tmp_path / "iter_0000040").mkdir()
    (tmp_path / "latest").write_text("iter_0000040\n")
    assert cd.latest().name == "iter_0000010"
