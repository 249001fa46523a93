"""The training workload both throughput stages measure: a 7B-shaped slice and its batch.

LLaMA-2 7B widths (hidden 4096, FFN 11008, 32 heads, RoPE θ 100,000 as the SpiRit recipe), ``layers`` of its 32
layers, sequence 4096, bf16, the SpiRit expressive vocabulary over LLaMA-2's 32,000 (32,768 with its fillers).
The micro-batch is the one ``spirit-plan`` recommends for the whole 7B recipe on a node of this GPU (8 GPUs,
global batch 256); a step is ``num_micro`` such micro-batches (gradient accumulation), as a data-parallel rank of
that layout runs. The dry run keeps every code path with the ``tiny`` model in fp32 on CPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GPU_LAYERS = 8  # about 1 s per step at 50 % of an H200: 11 steps of each framework fit the stage budgets
LLAMA_BASE_VOCAB = 32000
DRY_BASE_VOCAB = 600


@dataclass(frozen=True)
class Workload:
    model: object  # megatron_spirit.model.config.ModelConfig
    micro_batch: int
    num_micro: int
    base_vocab: int  # the sentencepiece model's size; the SpiRit pieces come on top
    vocab_size: int  # tokenizer size (base + SpiRit expressive pieces)
    padded_vocab: int  # embedding rows (Megatron padding at TP 1), also the HF baseline's vocab_size
    precision: str
    warmup_steps: int
    timed_steps: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.num_micro

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.model.seq_length

    @property
    def flops_per_token(self) -> float:
        """The project's one FLOPs formula (``model.flops``), as the trainer logs it."""
        from megatron_spirit.model.flops import flops_per_token

        return flops_per_token(self.model, self.model.seq_length, self.padded_vocab)

    def describe(self) -> dict:
        m = self.model
        return {"model": dataclasses.asdict(m), "micro_batch": self.micro_batch, "num_micro": self.num_micro,
                "global_batch": self.global_batch, "tokens_per_step": self.tokens_per_step,
                "vocab_size": self.vocab_size, "padded_vocab": self.padded_vocab, "precision": self.precision,
                "warmup_steps": self.warmup_steps, "timed_steps": self.timed_steps,
                "flops_per_token": self.flops_per_token}


def planner_micro_batch(gpu_memory_gib: float, peak_tflops: float, vocab_size: int) -> int:
    """The micro-batch ``spirit-plan`` recommends for the SpiRit 7B recipe on 8 GPUs of this memory."""
    from megatron_spirit.model import plan as planner
    from megatron_spirit.model.config import get_model_config

    cluster = planner.Cluster(gpus=8, memory_gib=gpu_memory_gib, peak_tflops=peak_tflops)
    return planner.recommend(get_model_config("spirit-7b"), 4096, 256, cluster, vocab_size).micro_batch


def make_workload(dry_run: bool, gpu_memory_gib: float = 80.0, peak_tflops: float = 989.0,
                  layers: int | None = None) -> Workload:
    from megatron_spirit.model.config import ParallelConfig, get_model_config, padded_vocab
    from megatron_spirit.tokenizer.vocab import SpiritVocab

    base = DRY_BASE_VOCAB if dry_run else LLAMA_BASE_VOCAB
    vocab = SpiritVocab(base, "expressive").full_size
    mb = planner_micro_batch(gpu_memory_gib, peak_tflops, SpiritVocab(LLAMA_BASE_VOCAB, "expressive").full_size)
    if dry_run:
        model = get_model_config("tiny", num_layers=layers or 2)
        num_micro, precision, warm, timed = 2, "fp32", 1, 3
    else:
        model = get_model_config("spirit-7b", num_layers=layers or GPU_LAYERS, seq_length=4096)
        num_micro, precision, warm, timed = max(1, 8 // mb), "bf16", 3, 8
    return Workload(model, mb, num_micro, base, vocab, padded_vocab(vocab, model, ParallelConfig()), precision,
                    warm, timed)


def planner_prediction(w: Workload, gpu_memory_gib: float, peak_tflops: float) -> dict:
    """The planner's step time and memory for exactly this slice on one GPU (no recompute, its micro-batch)."""
    from megatron_spirit.model import plan as planner

    cluster = planner.Cluster(gpus=1, memory_gib=gpu_memory_gib, peak_tflops=peak_tflops)
    rows = planner.plans(w.model, w.model.seq_length, w.global_batch, cluster, w.vocab_size,
                         micro_batches=(w.micro_batch,), recomputes=(None,), include_unfit=True)
    p = rows[0]
    return {"step_seconds": p.step_seconds, "efficiency": cluster.efficiency, "peak_tflops": peak_tflops,
            "memory_gib": p.memory.total / planner.GiB, "fits": p.fits, "step_flops": p.step_flops}
