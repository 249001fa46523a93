"""The trainer's configuration: typed sections loaded from YAML with ``key=value`` overrides.

    spirit-train configs/spiritlm_base_7b.yaml schedule.train_steps=1000 parallel.tp=2

Every section is a frozen dataclass; unknown keys and inconsistent values are errors that name the key
(:mod:`megatron_spirit.utils.config_io`). Defaults are the SpiRit-LM recipe where the paper states one
(docs/spec.md §4) and LLaMA-2's choices where it does not (AdamW β 0.9/0.95, weight decay 0.1, clip 1.0, no
warm-up, bf16).

The defaults *are* the recipe, deliberately, and the only copy of it: every config — the two 7B flavors, the CPU
demo, the tests — then trains with the paper's hyperparameters unless it says otherwise, and a YAML holds only
what its run changes (model, layout, paths; configs/spiritlm_7b.yaml). Neutral defaults would make each small
config repeat the recipe to train like it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..model.config import ModelConfig, ParallelConfig, get_model_config
from ..utils.config_io import ConfigError, load_config


@dataclass(frozen=True)
class DataConfig:
    """Where the training tokens come from.

    ``blend``: the JSON/YAML written by ``spirit-data mixture`` (weights and dataset prefixes per split), or
    ``prefixes``: plain Megatron dataset prefixes (optionally ``"weight prefix"`` strings) for small runs.
    """

    tokenizer: str = ""
    blend: Optional[str] = None
    prefixes: list[str] = field(default_factory=list)
    split: str = "98,2,0"
    cache_dir: Optional[str] = None
    eod_mask_loss: bool = False
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    num_workers: int = 0
    seed: Optional[int] = None  # default: the run's seed

    def __post_init__(self):
        if not self.tokenizer:
            raise ValueError("data.tokenizer: the SpiRit tokenizer folder is required")
        if (self.blend is None) == (not self.prefixes):
            raise ValueError("data: give exactly one of data.blend (spirit-data mixture output) or data.prefixes")


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 3.0e-5
    min_lr: float = 3.0e-5
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1.0e-8
    clip_grad: float = 1.0

    def __post_init__(self):
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"optimizer: need 0 <= min_lr <= lr and lr > 0 (lr={self.lr}, min_lr={self.min_lr})")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError("optimizer: adam betas must be in [0, 1)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Steps and batch. ``global_batch_size`` is in sequences (the paper: 256 × 4096 = 1,048,576 tokens)."""

    train_steps: int = 200_000
    global_batch_size: int = 256
    micro_batch_size: int = 4
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    decay_steps: Optional[int] = None  # default: train_steps - warmup_steps
    eval_interval: int = 0  # 0: no validation
    eval_steps: int = 10

    def __post_init__(self):
        for k in ("train_steps", "global_batch_size", "micro_batch_size"):
            if getattr(self, k) <= 0:
                raise ValueError(f"schedule.{k} must be positive")
        if self.warmup_steps < 0 or self.warmup_steps > self.train_steps:
            raise ValueError("schedule.warmup_steps must be in [0, train_steps]")


@dataclass(frozen=True)
class CheckpointConfig:
    """``dir``: where this run saves and resumes from. ``finetune_from``: a converted base model (weights only),
    used when ``dir`` holds no checkpoint yet. ``fallback``: resume from the newest *intact* checkpoint when the
    newest one is corrupt (a loud warning; false: stop with the error instead)."""

    dir: str = "checkpoints"
    save_interval: int = 1000
    keep_last: Optional[int] = 3
    finetune_from: Optional[str] = None
    save_on_exit: bool = True
    fallback: bool = True

    def __post_init__(self):
        if self.save_interval < 0:
            raise ValueError("checkpoint.save_interval must be >= 0 (0: only at the end and on signals)")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError("checkpoint.keep_last must be >= 1 or null")


@dataclass(frozen=True)
class LoggingConfig:
    dir: str = "logs"
    log_interval: int = 10
    tensorboard: bool = True
    plot_loss: bool = True


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation during training, beside the blend's validation loss (``schedule.eval_interval``).

    ``subset_validation``: at each ``schedule.eval_interval``, also the validation loss of each subset of the blend
    (text, speech, interleaved) on its own. ``tasks``: ``spirit-eval`` tasks (``swuggy:T,tsc:T2S``) scored on the
    live model every ``interval`` steps over pre-computed folders, ``data`` naming each benchmark's
    (``BENCH=DIR`` as ``spirit-eval score --data``); accuracy per task and modality goes to the console,
    ``eval.jsonl`` and TensorBoard.
    """

    subset_validation: bool = True
    tasks: str = ""
    data: list[str] = field(default_factory=list)
    interval: int = 0

    def __post_init__(self):
        if self.interval < 0:
            raise ValueError("evaluation.interval must be >= 0")
        if bool(self.tasks) != bool(self.interval):
            raise ValueError("evaluation: give both evaluation.tasks and evaluation.interval (> 0), or neither")
        for d in self.data:
            if "=" not in d:
                raise ValueError(f"evaluation.data: {d!r} is not BENCH=DIR")


@dataclass(frozen=True)
class TrainConfig:
    """A whole run. ``model`` is a named config plus field overrides: ``{name: spirit-7b, seq_length: 4096}``."""

    data: DataConfig
    model: dict[str, Any] = field(default_factory=lambda: {"name": "tiny"})
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    precision: Literal["fp32", "bf16"] = "bf16"
    seed: int = 1234

    def __post_init__(self):
        model = self.model_config  # validates the name and fields
        try:
            self.parallel.check_model(model)
        except ValueError as e:
            raise ValueError(f"parallel: {e}") from None

    @property
    def data_seed(self) -> int:
        """The seed of the data order: ``data.seed`` when set (0 too), else the run's ``seed``."""
        return self.seed if self.data.seed is None else self.data.seed

    @property
    def model_config(self) -> ModelConfig:
        spec = dict(self.model)
        name = spec.pop("name", None)
        if name is None:
            raise ValueError("model.name is required (e.g. spirit-7b, tiny)")
        try:
            return get_model_config(name, **spec)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model: {e}") from None

    def batch_layout(self, world_size: int) -> tuple[int, int]:
        """(data-parallel size, micro-batches per step); errors name the keys that do not divide."""
        dp = self.parallel.data_parallel_size(world_size)
        gbs, mbs = self.schedule.global_batch_size, self.schedule.micro_batch_size
        if gbs % (mbs * dp):
            raise ValueError(
                f"schedule.global_batch_size={gbs} is not divisible by schedule.micro_batch_size={mbs} × "
                f"data-parallel size {dp} (world {world_size} / tp {self.parallel.tp} / pp {self.parallel.pp})"
            )
        return dp, gbs // (mbs * dp)


def load_train_config(path: Optional[str], overrides: list[str] | None = None) -> TrainConfig:
    return load_config(TrainConfig, path, overrides)


__all__ = ["TrainConfig", "DataConfig", "OptimizerConfig", "ScheduleConfig", "CheckpointConfig",
           "LoggingConfig", "EvaluationConfig", "load_train_config", "ConfigError"]
