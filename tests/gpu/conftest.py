"""GPU test fixtures: one dataset, one starting checkpoint and the trainer runs the GPU tests compare.

Every run starts from the same weights — a tiny random Hugging Face LLaMA converted with ``spirit-convert
hf-to-megatron`` and given to ``spirit-train`` as ``checkpoint.finetune_from`` — and reads the same batches (the
data order is a function of the step), so losses of two runs differ only by what the runs do differently.
Runs are ``spirit-train`` processes started the way ``srun``/``torchrun`` start them (``tests/training/launch.py``);
the CPU reference sees no GPU (``CUDA_VISIBLE_DEVICES=""``: gloo, fp32, the CPU bridge).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ..training.launch import Job, losses

STEPS = 16
SAVE_INTERVAL = 4
TINY_HF = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
               tie_word_embeddings=False)  # the named "tiny" config's shapes


def record(name: str, **values) -> None:
    """Keep a test's figures: the GPU check copies $SPIRIT_GPU_FIGURES into results.json."""
    path = os.environ.get("SPIRIT_GPU_FIGURES")
    print(name, values)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": name, **values}, default=str) + "\n")


@dataclass(frozen=True)
class Setup:
    root: Path
    config: Path  # YAML: tiny model, the dataset, finetune_from the converted start, save every SAVE_INTERVAL
    hf_start: Path  # the HF model the runs start from
    start_ckpt: Path  # its conversion
    tokenizer: Path

    def args(self, run_dir: Path, *extra: str) -> list[str]:
        return [str(self.config), f"checkpoint.dir={run_dir}/ckpt", f"logging.dir={run_dir}/logs", *extra]


@dataclass(frozen=True)
class Run:
    dir: Path
    losses: dict
    log: str


def start_job(setup: Setup, run_dir: Path, *extra: str, cpu: bool = False) -> Job:
    """A one-rank spirit-train process; ``cpu`` hides the GPU from it."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        return Job(1, setup.args(run_dir, *extra), run_dir)
    finally:
        if cpu:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES")
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved


def finish(job: Job, run_dir: Path, timeout: float = 240) -> Run:
    codes = job.wait(timeout)
    assert codes == [0], f"exit codes {codes}; log:\n{job.output(0)[-6000:]}"
    return Run(run_dir, losses(run_dir / "logs" / "metrics.jsonl"), job.output(0))


@pytest.fixture(scope="session")
def gpu_setup(tmp_path_factory, spirit_tokenizer_dir) -> Setup:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from megatron_spirit.cli.convert import main as convert
    from megatron_spirit.cli.data import main as data_cli
    from megatron_spirit.synth.text import documents
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    root = tmp_path_factory.mktemp("gpu")
    corpus = root / "text.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(600, seed=3)))
    assert data_cli(["build", "--kind", "text", "--input", str(corpus), "--out", str(root / "text"),
                     "--tokenizer", str(spirit_tokenizer_dir), "--no-progress"]) == 0
    base_vocab = SpiritTokenizer(spirit_tokenizer_dir).vocab.base_size
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=base_vocab, **TINY_HF)).float()  # HF's own init (std 0.02)
    hf.save_pretrained(root / "hf_start")
    start = root / "start_ckpt"
    assert convert(["hf-to-megatron", "--hf", str(root / "hf_start"), "--tokenizer", str(spirit_tokenizer_dir),
                    "--out", str(start), "--rope-base", "10000", "--no-progress"]) == 0
    cfg = {
        "model": {"name": "tiny"},
        "precision": "bf16",
        "data": {"tokenizer": str(spirit_tokenizer_dir), "prefixes": [str(root / "text")], "split": "98,2,0"},
        "schedule": {"train_steps": STEPS, "global_batch_size": 8, "micro_batch_size": 2},
        "optimizer": {"lr": 2.0e-3, "min_lr": 2.0e-3},
        "checkpoint": {"save_interval": SAVE_INTERVAL, "finetune_from": str(start)},
        "logging": {"log_interval": 1, "tensorboard": False, "plot_loss": False},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return Setup(root, root / "tiny.yaml", root / "hf_start", start, spirit_tokenizer_dir)


@pytest.fixture(scope="session")
def runs(gpu_setup) -> dict[str, Run]:
    """Three runs at once from the same start: fp32 on CPU, bf16 on the GPU (the reference the other GPU tests
    compare with), and bf16 on the GPU with the distributed optimizer and overlapped grad reduce / param gather."""
    root = gpu_setup.root
    plans = {
        "cpu_fp32": (["precision=fp32"], True),
        "gpu_bf16": ([], False),
        "gpu_distopt": (["parallel.distributed_optimizer=true", "parallel.overlap_grad_reduce=true",
                         "parallel.overlap_param_gather=true"], False),
    }
    jobs = {name: start_job(gpu_setup, root / name, *extra, cpu=cpu) for name, (extra, cpu) in plans.items()}
    return {name: finish(job, root / name) for name, job in jobs.items()}
