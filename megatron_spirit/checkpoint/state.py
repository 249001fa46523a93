"""What a training checkpoint holds besides tensors: one typed record, saved as megatron-core's common state.

The dict it becomes (:meth:`TrainingState.to_common`) is the on-disk format; its keys are spelled here only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional


@dataclass(frozen=True)
class Layout:
    """The parallel layout a checkpoint was saved at (RNG states are only restored at the same one)."""

    tp: int
    pp: int
    dp: int

    @classmethod
    def current(cls) -> "Layout":
        from megatron.core import parallel_state

        return cls(parallel_state.get_tensor_model_parallel_world_size(),
                   parallel_state.get_pipeline_model_parallel_world_size(),
                   parallel_state.get_data_parallel_world_size())


@dataclass(frozen=True)
class TrainingState:
    """``step``: optimizer steps done; ``consumed_samples``: the data position (step × global batch);
    ``skipped``: steps skipped for a non-finite loss or gradient; ``padded_vocab``: embedding rows (a resume at
    another TP keeps them when it can split them); ``scheduler``: the LR scheduler's state dict;
    ``optimizer_common``: the optimizer's non-tensor state (:func:`.optimizer_state.common_state`)."""

    step: int
    consumed_samples: Optional[int]
    skipped: int = 0
    padded_vocab: Optional[int] = None
    layout: Optional[Layout] = None
    distributed_optimizer: bool = False
    scheduler: dict = field(default_factory=dict)
    optimizer_common: dict = field(default_factory=dict)

    def to_common(self) -> dict:
        d = asdict(self)
        d["layout"] = None if self.layout is None else asdict(self.layout)
        return d

    @classmethod
    def from_common(cls, common: dict, where: str = "checkpoint") -> "TrainingState":
        """From a saved common dict; keys this version does not know are ignored, a missing ``step`` is an error."""
        if "step" not in common:
            raise ValueError(f"{where}: the common state has no 'step': not a training checkpoint")
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in common.items() if k in known}
        d.setdefault("consumed_samples", None)
        if d.get("layout") is not None:
            d["layout"] = Layout(**d["layout"])
        return cls(**d)
