"""HF → Megatron → HF on the GPU: the converted start checkpoint and a checkpoint trained and saved on the GPU
give the same logits in megatron-core on the GPU as the HF model they came from / were exported to. Skipped
without CUDA."""
from __future__ import annotations

import pytest
import torch

from megatron_spirit.parallel.launch import run_ranks

from .conftest import record

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

#: fp32 on both sides (TF32 off): the two implementations differ only in summation order.
LOGITS_ATOL = 1e-3


def test_hf_megatron_hf_round_trip_on_gpu(gpu_setup, runs, tmp_path):
    from megatron_spirit.cli.convert import main as convert

    trained = runs["gpu_bf16"].dir / "ckpt"
    exported = tmp_path / "hf_exported"
    assert convert(["megatron-to-hf", "--ckpt", str(trained), "--out", str(exported), "--no-progress"]) == 0
    pairs = {"converted_start": (str(gpu_setup.start_ckpt), str(gpu_setup.hf_start), "fp32"),
             "trained_on_gpu": (str(trained), str(exported), "bf16")}
    (result,) = run_ranks("tests.gpu.workers:megatron_and_hf_logits", 1, args=(pairs, str(gpu_setup.tokenizer)),
                          timeout=300)
    record("hf_megatron_hf_gpu", **{name: {k: v for k, v in r.items()} for name, r in result.items()})
    for name, r in result.items():
        assert r["device"].startswith("cuda"), r
        assert r["max_abs_diff"] <= LOGITS_ATOL, (name, r)
    assert result["trained_on_gpu"]["changed_from_start"] > 0.01  # the export holds the trained weights
