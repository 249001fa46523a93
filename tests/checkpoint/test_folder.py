"""Checkpoint folder life cycle: a save interrupted at any point never becomes the latest."""
from megatron_spirit.checkpoint.folder import CheckpointDir, resolve, step_of


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


def test_resolve_takes_a_checkpoint_or_a_training_root(tmp_path):
    import pytest

    cd = CheckpointDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not a megatron-core distributed checkpoint"):
        resolve(cd.root)
    tmp = cd.begin(10)
    (tmp / "metadata.json").write_text("{}")
    final = cd.commit(10)
    assert resolve(cd.root) == final and resolve(final) == final
    _save(cd, 20)  # complete, but not a megatron-core checkpoint (no metadata.json): not taken
    with pytest.raises(FileNotFoundError, match="nor a training folder"):
        resolve(cd.root)
