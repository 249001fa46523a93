"""Model and parallel-layout configs (frozen dataclasses) and their translation into megatron-core's TransformerConfig.

API used by the trainer and the converters::

    from megatron_spirit.model.config import get_model_config, ParallelConfig, transformer_config, padded_vocab
    mcfg = get_model_config("spirit-7b")                  # or "llama2-7b", "tiny", "tiny-gqa", ... (+ overrides)
    pcfg = ParallelConfig(tp=2, pp=2, sp=True, distributed_optimizer=True)
    tcfg = transformer_config(mcfg, pcfg, dtype="bf16")   # megatron.core TransformerConfig
    vocab = padded_vocab(tokenizer.vocab.full_size, mcfg, pcfg)   # docs/spec.md §1 padding, via tokenizer/vocab.py

The architecture is LLaMA-2's: RMSNorm (eps 1e-5), SwiGLU MLP, no biases, rotary position embeddings,
untied input/output embeddings, optional grouped-query attention (``num_query_groups``); dropout 0 (megatron's
default would be 0.1). ``rope_base`` is 10,000 as in HF LLaMA-2; the SpiRit-LM recipe raises it to 100,000
(the ``spirit-*`` configs). The vocabulary size is not part of a model config: it comes from the tokenizer.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Optional

import torch

from ..tokenizer.vocab import padded_vocab_size

#: Parameter dtypes by the names configs and command lines use.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The SpiRit-LM recipe's RoPE base (docs/spec.md §4); LLaMA-2's own is 10,000.
RECIPE_ROPE_BASE = 100000.0
RECOMPUTE = (None, "selective", "full")


@dataclass(frozen=True)
class ModelConfig:
    """A LLaMA-2-style decoder. Sizes as in the HF config (``intermediate_size`` = ``ffn_hidden_size``)."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: Optional[int] = None  # GQA key/value heads; None = multi-head attention
    seq_length: int = 4096
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    make_vocab_size_divisible_by: int = 128
    init_method_std: float = 0.02
    name: str = "custom"

    def __post_init__(self):
        for key in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "seq_length"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model config {self.name!r}: {key} must be positive, got {getattr(self, key)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model config {self.name!r}: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_query_groups is not None and (
            self.num_query_groups <= 0 or self.num_attention_heads % self.num_query_groups
        ):
            raise ValueError(
                f"model config {self.name!r}: num_query_groups {self.num_query_groups} must divide "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.rope_base <= 0 or self.norm_eps <= 0 or self.init_method_std <= 0:
            raise ValueError(f"model config {self.name!r}: rope_base, norm_eps and init_method_std must be > 0")

    @property
    def kv_channels(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def num_parameters(self, vocab_size: int) -> int:
        """Parameters with untied embeddings (embedding + output layer each ``vocab × hidden``)."""
        h, f, kv = self.hidden_size, self.ffn_hidden_size, self.kv_channels
        attn = h * (self.num_attention_heads * kv) + 2 * h * (self.query_groups * kv) + (self.num_attention_heads * kv) * h
        mlp = 3 * h * f
        per_layer = attn + mlp + 2 * h
        return self.num_layers * per_layer + h + 2 * vocab_size * h


def dtype_name(dtype: torch.dtype) -> str:
    """The :data:`DTYPES` name of a torch dtype ("bf16" for ``torch.bfloat16``)."""
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"{dtype} is not one of the parameter dtypes {', '.join(DTYPES)}")


def check_dtype(name: str) -> torch.dtype:
    """The torch dtype of a :data:`DTYPES` name; an error listing the names otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _llama(name, layers, hidden, ffn, heads, groups=None, rope=10000.0, seq=4096, std=0.02) -> ModelConfig:
    return ModelConfig(layers, hidden, ffn, heads, groups, seq, rope, 1e-5, 128, std, name)


#: Named configs. ``llama2-*`` match the HF checkpoints (θ 10,000); ``spirit-*`` are the same networks with the
#: recipe's θ 100,000 (docs/spec.md §4). ``tiny*``/``small`` are for tests and the demo.
NAMED_CONFIGS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        _llama("llama2-7b", 32, 4096, 11008, 32),
        _llama("llama2-13b", 40, 5120, 13824, 40),
        _llama("llama2-70b", 80, 8192, 28672, 64, groups=8),
        _llama("spirit-7b", 32, 4096, 11008, 32, rope=RECIPE_ROPE_BASE),
        _llama("spirit-13b", 40, 5120, 13824, 40, rope=RECIPE_ROPE_BASE),
        _llama("tiny", 2, 64, 176, 4, seq=64),
        _llama("tiny-gqa", 4, 64, 176, 4, groups=2, seq=64),
        _llama("small", 4, 256, 688, 4, seq=512, rope=RECIPE_ROPE_BASE),
    )
}


def get_model_config(name: str, **overrides) -> ModelConfig:
    """A named config, with any field replaced (e.g. ``seq_length=2048``); unknown names/fields raise."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown model config {name!r}: expected one of {', '.join(NAMED_CONFIGS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown model config field(s) {', '.join(bad)}: expected some of {', '.join(sorted(fields))}")
    return dataclasses.replace(NAMED_CONFIGS[name], **overrides)


@dataclass(frozen=True)
class ParallelConfig:
    """How the model is laid out over GPUs/processes. Data parallelism is what is left: ``world / (tp·pp)``.

    ``vpp``: virtual pipeline stages (model chunks) per pipeline rank, None for none. ``sp``: sequence
    parallelism (needs tp > 1). ``recompute``: activation recomputation, None / "selective" (attention core) /
    "full" (whole layers, uniform, 1 layer per checkpoint).
    """

    tp: int = 1
    pp: int = 1
    vpp: Optional[int] = None
    sp: bool = False
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    recompute: Optional[str] = None

    def __post_init__(self):
        if self.tp < 1 or self.pp < 1:
            raise ValueError(f"parallel config: tp and pp must be >= 1, got tp={self.tp} pp={self.pp}")
        if self.vpp is not None and (self.vpp < 1 or self.pp < 2):
            raise ValueError(f"parallel config: vpp={self.vpp} needs pp >= 2 and vpp >= 1")
        if self.sp and self.tp == 1:
            raise ValueError("parallel config: sequence parallel (sp) needs tp > 1")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"parallel config: recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if self.overlap_param_gather and not self.distributed_optimizer:
            raise ValueError("parallel config: overlap_param_gather needs distributed_optimizer")

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp

    def data_parallel_size(self, world_size: int) -> int:
        if world_size % self.model_parallel_size:
            raise ValueError(
                f"world size {world_size} is not divisible by tp×pp = {self.tp}×{self.pp} = {self.model_parallel_size}"
            )
        return world_size // self.model_parallel_size

    def check_model(self, model: ModelConfig) -> None:
        """Errors naming every key that cannot be split this way (the one TP/PP divisibility check)."""
        problems = []
        if model.num_attention_heads % self.tp or model.query_groups % self.tp:
            problems.append(
                f"tp={self.tp} must divide num_attention_heads={model.num_attention_heads} and "
                f"num_query_groups={model.query_groups} of model {model.name!r}"
            )
        if model.ffn_hidden_size % self.tp:
            problems.append(f"tp={self.tp} must divide ffn_hidden_size={model.ffn_hidden_size} of {model.name!r}")
        stages = self.pp * (self.vpp or 1)
        if model.num_layers % stages:
            problems.append(f"pp×vpp = {stages} must divide num_layers={model.num_layers} of model {model.name!r}")
        if self.sp and model.seq_length % self.tp:
            problems.append(f"sequence parallel: tp={self.tp} must divide seq_length={model.seq_length}")
        if problems:
            raise ValueError("; ".join(problems))


def padded_vocab(vocab_size: int, model: ModelConfig, parallel: ParallelConfig) -> int:
    """Embedding rows: the tokenizer's size padded to ``make_vocab_size_divisible_by × tp`` (docs/spec.md §1)."""
    return padded_vocab_size(vocab_size, model.make_vocab_size_divisible_by, parallel.tp)


def transformer_config(
    model: ModelConfig,
    parallel: ParallelConfig,
    dtype: str = "fp32",
    use_cpu_initialization: Optional[bool] = None,
    fused_kernels: Optional[bool] = None,
    **extra,
):
    """megatron-core's TransformerConfig for this model and layout.

    ``dtype``: "fp32" or "bf16" (params and pipeline communication). ``use_cpu_initialization`` (default: when
    CUDA is absent) builds every weight full-size on CPU from the global seed, then keeps this rank's shard —
    so initial weights do not depend on the TP size. ``fused_kernels`` (default: CUDA present) turns on
    megatron's CUDA-only fusions (masked softmax, bias-SwiGLU, bias-dropout-add; RoPE when Transformer Engine
    is installed). ``extra`` passes any other
    TransformerConfig field through (e.g. ``deallocate_pipeline_outputs``).
    """
    from megatron.core.transformer import TransformerConfig

    torch_dtype = check_dtype(dtype)
    parallel.check_model(model)
    cuda = torch.cuda.is_available()
    fused = cuda if fused_kernels is None else fused_kernels
    cpu_init = (not cuda) if use_cpu_initialization is None else use_cpu_initialization
    recompute = {}
    if parallel.recompute == "full":
        recompute = dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif parallel.recompute == "selective":
        recompute = dict(recompute_granularity="selective")
    kwargs = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.query_groups,
        kv_channels=model.kv_channels,
        init_method_std=model.init_method_std,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        attention_softmax_in_fp32=True,
        tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp,
        virtual_pipeline_model_parallel_size=parallel.vpp,
        sequence_parallel=parallel.sp,
        params_dtype=torch_dtype,
        pipeline_dtype=torch_dtype,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        use_cpu_initialization=cpu_init,
        bias_activation_fusion=fused,
        masked_softmax_fusion=fused,
        bias_dropout_fusion=fused,
        apply_rope_fusion=fused and importlib.util.find_spec("transformer_engine") is not None,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        deallocate_pipeline_outputs=True,
        # gloo mis-pairs batched isend/irecv to one peer (PP=2 with virtual stages gave wrong activations);
        # NCCL groups them correctly. See parallel/cpu.py, item 8.
        batch_p2p_comm=cuda,
        **recompute,
    )
    kwargs.update(extra)
    return TransformerConfig(**kwargs)
