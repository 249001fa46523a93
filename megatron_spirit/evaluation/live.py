"""Benchmark accuracy of the model being trained: an evaluator (``training.evaluators``) over spirit-eval tasks.

``cli/train.py`` builds it from the training config's ``evaluation`` section and hands it to the trainer, which
calls it every ``evaluation.interval`` steps with its live chunks (DDP-wrapped, this rank's). Scoring is the
one of ``spirit-eval score --megatron`` (:mod:`.megatron`), data-parallel over items; nothing is written but
the returned accuracies (``eval/<task>:<modality>``, token-normalised, the paper's Table 4 rule).
"""
from __future__ import annotations

from dataclasses import replace

from ..checkpoint.weights import unwrap
from .megatron import MegatronLogits, honours_mask
from .run import EvalConfig, evaluate
from .scoring import PackingConfig


class TaskEvaluator:
    name = "eval"

    def __init__(self, tasks: str, data: dict[str, str], tokenizer_dir: str, interval: int,
                 cfg: EvalConfig = EvalConfig()):
        from ..tokenizer.tokenizer import SpiritTokenizer

        self.tasks, self.data, self.interval, self.cfg = tasks, dict(data), interval, cfg
        self.tokenizer = SpiritTokenizer(tokenizer_dir)

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    def __call__(self, model: list, step: int) -> dict[str, float]:
        import torch

        rows = min(int(unwrap(model[0]).vocab_size), self.tokenizer.vocab.export_size)
        cfg = self.cfg
        if not honours_mask(model):  # Transformer Engine's causal core: one request per row, plain causal
            cfg = replace(cfg, packing=PackingConfig(share_context=False, pack=False,
                                                     batch_tokens=cfg.packing.batch_tokens))
        results = evaluate(self.tasks, self.data, MegatronLogits(model, rows), rows, self.tokenizer, None, cfg,
                           model=f"step {step}", device="cuda" if torch.cuda.is_available() else "cpu",
                           log=lambda *a, **k: None)
        return {name: entry["normalised"]["accuracy"] for name, entry in results["tasks"].items()}
