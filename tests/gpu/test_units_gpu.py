"""HuBERT units on the GPU equal the CPU's: ``spirit-units extract`` on both devices over the same files.
Skipped without CUDA."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .conftest import record

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

#: fp32 on the GPU (TF32 off): the same units as the CPU but for frames within rounding of two centroids.
FP32_SAME = 0.995
#: bf16 autocast (the CLI's GPU default) on a random tiny HuBERT whose frames sit close to several of 16 centroids
#: drawn from its own features: emulated on CPU (autocast bf16 against fp32) 83 % of frames keep their unit; a
#: broken batch, mask or device path gives about 1/16.
BF16_SAME = 0.70


def _wav(rng, seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 300)
    return (0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(np.pi * t))) + 0.05 * rng.standard_normal(len(t))
            ).astype(np.float32)


def _frame_units(folder) -> dict[str, np.ndarray]:
    """id → the HuBERT unit of every frame (the manifest stores runs: units with their start frames)."""
    from megatron_spirit.speech.manifest import UnitsRecord

    out = {}
    for line in (folder / "units-00000-of-00001.jsonl").read_text().splitlines():
        rec = UnitsRecord.from_json(line)
        out[rec.id] = rec.streams["hubert"].frame_level()
    return out


def test_hubert_units_on_gpu_equal_cpu(tmp_path, monkeypatch):
    import soundfile as sf

    from megatron_spirit.cli.units import main as units_cli
    from megatron_spirit.speech.hubert import HubertFeaturizer, save_random_hubert, tiny_hubert_config
    from megatron_spirit.speech.kmeans import KMeansMeta, KMeansQuantizer

    hubert = save_random_hubert(tiny_hubert_config(), tmp_path / "hubert")
    rng = np.random.default_rng(0)
    wavs = [_wav(rng, rng.uniform(1.0, 4.0)) for _ in range(8)]
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "w") as f:
        for i, w in enumerate(wavs):
            sf.write(tmp_path / f"u{i}.wav", w, 16000, subtype="FLOAT")
            f.write(json.dumps({"id": f"u{i}", "path": str(tmp_path / f"u{i}.wav")}) + "\n")
    cpu = HubertFeaturizer(hubert, (2,), device="cpu")
    feats = np.concatenate([x[2] for x in cpu(wavs)])
    centroids = tmp_path / "centroids.npy"
    np.save(centroids, feats[rng.choice(len(feats), 16, replace=False)])

    def extract(device: str):
        out = tmp_path / f"units_{device}"
        assert units_cli(["extract", "--manifest", str(manifest), "--out", str(out), "--hubert-model", str(hubert),
                          "--kmeans", str(centroids), "--layer", "2", "--device", device]) == 0
        return _frame_units(out)

    on_cpu, on_gpu = extract("cpu"), extract("cuda")
    assert set(on_cpu) == set(on_gpu) == {f"u{i}" for i in range(8)}
    frames = sum(len(v) for v in on_cpu.values())
    assert all(len(on_cpu[k]) == len(on_gpu[k]) for k in on_cpu)  # same frame counts and timing
    bf16_same = sum(int((on_cpu[k] == on_gpu[k]).sum()) for k in on_cpu)

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    km = KMeansQuantizer(np.load(centroids), KMeansMeta(layer=2))
    gpu32 = HubertFeaturizer(hubert, (2,), device="cuda", bf16=False)
    fp32_units = [km(x[2]) for x in gpu32(wavs)]
    cpu_units = [km(x[2]) for x in cpu(wavs)]
    fp32_same = sum(int((a == b).sum()) for a, b in zip(fp32_units, cpu_units))
    record("hubert_units_gpu_vs_cpu", frames=frames, bf16_cli_same_fraction=bf16_same / frames,
           fp32_same_fraction=fp32_same / frames)
    assert fp32_same / frames >= FP32_SAME
    assert bf16_same / frames >= BF16_SAME
