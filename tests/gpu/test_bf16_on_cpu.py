"""The GPU's precision path, emulated on CPU so CI keeps it: bf16 ``spirit-train`` (Float16Module, fp32 main
weights in the optimizer) from a weights-only start, against fp32, and a bf16 checkpoint resumed. Not a GPU test:
it runs everywhere. Both once broke without failing any fp32 test (docs/notes/gpu.md): the start's weights were
overwritten by the optimizer's random-init copy after step 1, and a bf16 checkpoint could not be loaded."""
from __future__ import annotations

import shutil

import pytest

from .conftest import finish, start_job

STEPS = ["schedule.train_steps=4", "checkpoint.save_interval=2", "checkpoint.keep_last=null"]
BF16_VS_FP32 = 0.01  # emulated figures: 2e-5 at step 1, ≤ 3.3e-3 over 16 steps; the lost start gave 0.21


def test_bf16_on_cpu_keeps_the_start_and_resumes(gpu_setup):
    root = gpu_setup.root / "bf16_cpu"
    jobs = {p: start_job(gpu_setup, root / p, f"precision={p}", *STEPS, cpu=True) for p in ("fp32", "bf16")}
    fp32, bf16 = (finish(jobs[p], root / p) for p in ("fp32", "bf16"))
    assert "; bf16" in bf16.log and "initialised weights from" in bf16.log
    for step in range(1, 5):
        assert bf16.losses[step] == pytest.approx(fp32.losses[step], abs=BF16_VS_FP32), step
    resumed_dir = root / "resumed"
    shutil.copytree(root / "bf16" / "ckpt" / "iter_0000002", resumed_dir / "ckpt" / "iter_0000002")
    resumed = finish(start_job(gpu_setup, resumed_dir, "precision=bf16", *STEPS, cpu=True), resumed_dir)
    assert "resumed from" in resumed.log
    assert sorted(resumed.losses) == [3, 4]
    for step in (3, 4):
        assert resumed.losses[step] == bf16.losses[step], step  # same layout on CPU: bit-identical
