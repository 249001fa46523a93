"""Before booking a cluster: which TP/PP/micro-batch/recompute layouts fit in GPU memory, and how fast they are.

For a model, sequence length, global batch, GPU count and GPU memory, ``plans()`` lists every layout that fits
with megatron's distributed optimizer (bf16 params, fp32 grads and Adam states), with a memory breakdown per
GPU and the step's FLOPs and estimated time; ``recommend()`` picks the fastest. The model is deliberately
simple and printed in full so a user can check it:

Memory per GPU (worst pipeline stage), bytes:
- weights and grads: ``P · (2 + 4 + 12/DP)`` — bf16 parameters, fp32 main grads (megatron accumulates grads in
  fp32), fp32 master weights + Adam m + v sharded over DP (distributed optimizer). ``P`` = parameters of the
  stage's layers ÷ TP, plus the embedding (first stage) or output layer (last stage) ÷ TP.
- activations per layer per micro-batch, with sequence parallelism (TP > 1) and flash/SDPA attention (no
  ``s×s`` scores kept), bf16: ``2 · s·b · (6h + 2·g·d + 3f) / TP`` — stored for backward: both norm inputs
  and outputs (4h), q (h), k and v (2·g·d), the attention output (h), the SwiGLU input (2f) and output (f).
  This counts the GPU path's fused kernels (Transformer Engine norm+linear, fused SwiGLU); measured on this
  project's CPU local spec (unfused torch RMSNorm and SwiGLU) a layer keeps about 1.6× as much.
  Selective recompute drops the attention output (recomputed); full recompute keeps only each layer's input
  (``2·s·b·h/TP``) plus one layer's activations while it is recomputed.
- in flight: 1F1B keeps ``min(PP, micro-batches)`` micro-batches of activations on the first stage.
- logits: the last stage keeps fp32 softmax of one micro-batch, ``4 · s·b · V / TP``.
- a fixed overhead (CUDA context, NCCL buffers, allocator fragmentation; default 4 GiB), and the total must
  stay under ``usable`` (default 90 %) of the GPU's memory.

Time per step: hardware FLOPs (``model.flops.flops_per_token``, the project's one FLOPs formula, × tokens;
full recompute adds a forward per layer, selective the attention core) ÷ (GPUs × peak × efficiency),
stretched by the 1F1B bubble ``(PP−1)/m`` and a tensor-parallel communication factor (1, 0.96, 0.92, 0.85 for
TP 1/2/4/8, TP confined to one node). These efficiencies are assumptions (stated, configurable), not measurements.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .config import ModelConfig, ParallelConfig, padded_vocab

GiB = 1024**3
#: Throughput factor of tensor parallelism inside a node (communication not hidden by compute): assumptions.
TP_EFFICIENCY = {1: 1.0, 2: 0.96, 4: 0.92, 8: 0.85}
RECOMPUTE_CHOICES = (None, "selective", "full")


@dataclass(frozen=True)
class Cluster:
    gpus: int
    memory_gib: float = 80.0
    peak_tflops: float = 312.0  # A100 dense bf16
    gpus_per_node: int = 8
    efficiency: float = 0.5  # achieved fraction of peak in matmul-bound steady state (assumption)
    usable: float = 0.9  # fraction of GPU memory we allow ourselves
    overhead_gib: float = 4.0

    def __post_init__(self):
        if self.gpus < 1 or self.memory_gib <= 0 or self.peak_tflops <= 0:
            raise ValueError("cluster: gpus, memory and peak TFLOP/s must be positive")
        if not 0 < self.efficiency <= 1 or not 0 < self.usable <= 1:
            raise ValueError("cluster: efficiency and usable must be in (0, 1]")


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU on the worst pipeline stage."""

    params: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.logits + self.overhead


@dataclass(frozen=True)
class Plan:
    tp: int
    pp: int
    dp: int
    micro_batch: int
    recompute: Optional[str]
    num_microbatches: int
    memory: Memory
    fits: bool
    step_flops: float
    step_seconds: float
    tokens_per_second: float
    notes: tuple = field(default=())

    @property
    def parallel_config(self) -> ParallelConfig:
        return ParallelConfig(tp=self.tp, pp=self.pp, sp=self.tp > 1, distributed_optimizer=True, recompute=self.recompute)

    def row(self) -> str:
        m = self.memory
        return (
            f"TP{self.tp:<2d} PP{self.pp:<2d} DP{self.dp:<3d} mb{self.micro_batch:<2d} "
            f"{(self.recompute or 'none'):9s} m={self.num_microbatches:<4d} "
            f"mem {m.total / GiB:6.1f} GiB (w {m.params / GiB:5.1f} g {m.grads / GiB:5.1f} "
            f"opt {m.optimizer / GiB:5.1f} act {m.activations / GiB:5.1f} logits {m.logits / GiB:4.1f}) "
            f"step {self.step_seconds:6.2f} s  {self.tokens_per_second:9,.0f} tok/s"
        )


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in (1, 2, 4, 8, 16, 32, 64) if d <= limit and n % d == 0]


def stage_parameters(model: ModelConfig, vocab: int, tp: int, pp: int) -> float:
    """Parameters held by one GPU of the heaviest pipeline stage."""
    h, f, d = model.hidden_size, model.ffn_hidden_size, model.kv_channels
    q, g = model.num_attention_heads * d, model.query_groups * d
    layer = h * (q + 2 * g) + q * h + 3 * h * f + 2 * h
    layers = model.num_layers // pp
    embed = vocab * h
    if pp == 1:
        return (layers * layer + 2 * embed + h) / tp
    return (layers * layer + embed + h) / tp  # first stage (embedding) ≈ last stage (output layer + final norm)


def activation_bytes_per_layer(model: ModelConfig, seq: int, micro_batch: int, tp: int, recompute: Optional[str]) -> float:
    """bf16 bytes one layer keeps for backward for one micro-batch (see the module docstring)."""
    h, f, d, g = model.hidden_size, model.ffn_hidden_size, model.kv_channels, model.query_groups
    tokens = seq * micro_batch
    if recompute == "full":
        return 2 * tokens * h / tp
    per_token = 6 * h + 2 * g * d + 3 * f
    if recompute == "selective":
        per_token -= h
    return 2 * tokens * per_token / tp


def memory(model: ModelConfig, vocab: int, seq: int, micro_batch: int, num_microbatches: int,
           tp: int, pp: int, dp: int, recompute: Optional[str], overhead_gib: float) -> Memory:
    p = stage_parameters(model, vocab, tp, pp)
    layers = model.num_layers // pp
    in_flight = min(pp, num_microbatches)
    act = layers * in_flight * activation_bytes_per_layer(model, seq, micro_batch, tp, recompute)
    if recompute == "full":  # one layer's full activations exist while it is recomputed
        act += activation_bytes_per_layer(model, seq, micro_batch, tp, None)
    logits = 4.0 * seq * micro_batch * vocab / tp
    if pp > 1:  # the first stage holds the most activations, the last the logits; take the worse one
        last = layers * 1 * activation_bytes_per_layer(model, seq, micro_batch, tp, recompute) + logits
        if last > act:
            act, logits = last - logits, logits
        else:
            logits = 0.0
    return Memory(params=2.0 * p, grads=4.0 * p, optimizer=12.0 * p / dp, activations=act, logits=logits,
                  overhead=overhead_gib * GiB)


def step_flops(model: ModelConfig, vocab: int, seq: int, global_batch: int, recompute: Optional[str]) -> float:
    """Hardware FLOPs of one step (recomputed work included: it takes time)."""
    from .flops import flops_per_token

    return flops_per_token(model, seq, vocab, recompute) * seq * global_batch


def plans(model: ModelConfig, seq: int, global_batch: int, cluster: Cluster, vocab_size: int,
          micro_batches=(1, 2, 4, 8), recomputes=RECOMPUTE_CHOICES, include_unfit: bool = False) -> list[Plan]:
    """Every layout (TP within a node, PP dividing the layers, DP the rest), fastest first."""
    if seq <= 0 or global_batch <= 0:
        raise ValueError("sequence length and global batch must be positive")
    model = model if model.seq_length == seq else _with_seq(model, seq)
    out = []
    for tp in _divisors(model.query_groups, min(cluster.gpus_per_node, cluster.gpus)):
        if model.ffn_hidden_size % tp:
            continue
        for pp in _divisors(model.num_layers, cluster.gpus // tp):
            if cluster.gpus % (tp * pp):
                continue
            dp = cluster.gpus // (tp * pp)
            vocab = padded_vocab(vocab_size, model, ParallelConfig(tp=tp))
            for mb in micro_batches:
                if global_batch % (mb * dp):
                    continue
                m = global_batch // (mb * dp)
                for rc in recomputes:
                    mem = memory(model, vocab, seq, mb, m, tp, pp, dp, rc, cluster.overhead_gib)
                    fits = mem.total <= cluster.usable * cluster.memory_gib * GiB
                    flops = step_flops(model, vocab, seq, global_batch, rc)
                    ideal = flops / (cluster.gpus * cluster.peak_tflops * 1e12 * cluster.efficiency)
                    seconds = ideal * (1 + (pp - 1) / m) / TP_EFFICIENCY.get(tp, 0.8)
                    plan = Plan(tp, pp, dp, mb, rc, m, mem, fits, flops, seconds, seq * global_batch / seconds)
                    if fits or include_unfit:
                        out.append(plan)
    out.sort(key=lambda p: (-p.tokens_per_second, p.memory.total))
    return out


def recommend(model: ModelConfig, seq: int, global_batch: int, cluster: Cluster, vocab_size: int) -> Plan:
    """The fastest layout that fits; a clear error when none does."""
    fitting = plans(model, seq, global_batch, cluster, vocab_size)
    if not fitting:
        raise ValueError(
            f"no TP/PP/micro-batch/recompute layout of {model.name} fits {cluster.gpus} GPUs of "
            f"{cluster.memory_gib:g} GiB at sequence {seq} and global batch {global_batch}"
        )
    return fitting[0]


def _with_seq(model: ModelConfig, seq: int) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(model, seq_length=seq)


def gpu_hours(plan: Plan, steps: int) -> float:
    return plan.step_seconds * steps * (plan.tp * plan.pp * plan.dp) / 3600.0


def summary(plan: Plan, model: ModelConfig, cluster: Cluster, steps: int) -> str:
    seq_tokens = plan.tokens_per_second * plan.step_seconds
    tflops = plan.step_flops / plan.step_seconds / (plan.tp * plan.pp * plan.dp) / 1e12
    return (
        f"recommended for {model.name} on {cluster.gpus}×{cluster.memory_gib:g} GiB: TP={plan.tp} PP={plan.pp} "
        f"DP={plan.dp} micro-batch={plan.micro_batch} ({plan.num_microbatches} per step per DP rank) "
        f"recompute={plan.recompute or 'none'} sequence-parallel={'on' if plan.tp > 1 else 'off'} "
        f"distributed optimizer on\n"
        f"  memory per GPU {plan.memory.total / GiB:.1f} GiB of {cluster.memory_gib:g} "
        f"(weights {plan.memory.params / GiB:.1f}, grads {plan.memory.grads / GiB:.1f}, "
        f"optimizer {plan.memory.optimizer / GiB:.1f}, activations {plan.memory.activations / GiB:.1f}, "
        f"logits {plan.memory.logits / GiB:.1f}, overhead {plan.memory.overhead / GiB:.1f})\n"
        f"  step: {plan.step_flops / 1e15:.1f} PFLOP for {seq_tokens:,.0f} tokens, "
        f"≈{plan.step_seconds:.2f} s ({tflops:.0f} TFLOP/s/GPU assumed achieved), "
        f"{plan.tokens_per_second:,.0f} tokens/s; {steps:,} steps ≈ {gpu_hours(plan, steps):,.0f} GPU-hours"
    )
