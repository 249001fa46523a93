"""A damaged checkpoint never exports silently: checksums name the file; a training folder falls back."""
from __future__ import annotations

import shutil

import pytest


def _flip(path, n=8):
    """Flip ``n`` bytes in the middle of ``path``: its size and zip structure stay intact."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _largest_shard(folder):
    return max(folder.glob("*.distcp"), key=lambda p: p.stat().st_size)


def _training_folder(root, ckpt, steps=(1, 2)):
    """``root`` laid out like a training run's checkpoint folder, every iter_* a copy of ``ckpt``."""
    for step in steps:
        shutil.copytree(ckpt, root / f"iter_{step:07d}")
        (root / f"iter_{step:07d}" / "COMPLETE").write_text(str(step))
    (root / "latest").write_text(f"iter_{steps[-1]:07d}\n")
    return [root / f"iter_{s:07d}" for s in steps]


def test_converter_outputs_carry_checksums(tmp_path, converted):
    from megatron_spirit.checkpoint.checksums import MANIFEST, verify
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf

    assert (converted["gqa"] / MANIFEST).is_file() and verify(converted["gqa"]) == []
    out = megatron_to_hf(converted["gqa"], tmp_path / "hf", progress=False)
    assert (out / MANIFEST).is_file() and verify(out) == []


def test_flipped_bytes_fail_the_export_naming_the_file(tmp_path, converted):
    from megatron_spirit.checkpoint.checksums import CorruptCheckpoint
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf

    ckpt = tmp_path / "ckpt"
    shutil.copytree(converted["gqa"], ckpt)
    shard = _largest_shard(ckpt)
    _flip(shard)
    out = tmp_path / "out"
    with pytest.raises(CorruptCheckpoint, match=f"{shard} does not match its checksum"):
        megatron_to_hf(ckpt, out, progress=False)
    assert not out.exists()


def test_training_folder_with_a_truncated_newest_checkpoint(tmp_path, converted, capsys):
    from megatron_spirit.cli.convert import main

    older, newest = _training_folder(tmp_path / "run", converted["gqa"])
    shard = _largest_shard(newest)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    args = ["megatron-to-hf", "--ckpt", str(tmp_path / "run"), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a"), "--no-fallback"]) == 2
    err = capsys.readouterr().err
    assert f"error: checkpoint {newest} is corrupt: {shard} has" in err and "truncated" in err, err
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: checkpoint {newest} is corrupt" in err
    assert f"falling back to the previous complete checkpoint {older}" in err
    assert (tmp_path / "b" / "config.json").is_file()


def test_checkpoint_without_checksums_exports_with_a_warning(tmp_path, converted, capsys):
    from megatron_spirit.checkpoint.checksums import MANIFEST
    from megatron_spirit.cli.convert import main

    ckpt = tmp_path / "old"
    shutil.copytree(converted["gqa"], ckpt)
    (ckpt / MANIFEST).unlink()
    assert main(["megatron-to-hf", "--ckpt", str(ckpt), "--out", str(tmp_path / "hf"), "--no-progress"]) == 0
    assert f"warning: {ckpt} has no {MANIFEST}" in capsys.readouterr().err
