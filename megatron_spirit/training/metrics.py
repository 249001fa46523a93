"""Training metrics: throughput, TFLOP/s, MFU and HFU (FLOPs from :mod:`megatron_spirit.model.flops`),
TensorBoard and the loss-curve plot.

TFLOP/s/GPU and MFU count model FLOPs only (forward + backward of the architecture, recompute excluded): the same
run reads the same whatever it recomputes. HFU (hardware FLOPs utilisation, printed when activation recompute
is on) counts the recomputed forward work too."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

#: Dense bf16 peak per GPU (TFLOP/s) used for MFU/HFU when the device is recognised.
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "cpu": float("nan")}


def peak_tflops(device_name: str) -> float:
    for key, value in PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return value
    return float("nan")


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int
    seconds: float
    skipped: int
    memory_gb: float

    def line(self, model_flops_per_tok: float, world_size: int, peak: float,
             hardware_flops_per_tok: float | None = None) -> str:
        """One console line; ``peak`` NaN (unknown device) leaves out MFU/HFU, HFU only when it differs."""
        tps = self.tokens / max(self.seconds, 1e-9)
        tflops = tps * model_flops_per_tok / world_size / 1e12
        parts = [
            f"step {self.step:>7d}",
            f"loss {self.loss:.4f}",
            f"lr {self.lr:.3e}",
            f"grad_norm {self.grad_norm:.3f}",
            f"tokens/s {tps:,.0f}",
            f"TFLOP/s/GPU {tflops:.2f}",
        ]
        if not math.isnan(peak):
            parts.append(f"MFU {100 * tflops / peak:.1f}%")
            if hardware_flops_per_tok is not None and hardware_flops_per_tok != model_flops_per_tok:
                parts.append(f"HFU {100 * tflops * hardware_flops_per_tok / model_flops_per_tok / peak:.1f}%")
        parts += [f"mem {self.memory_gb:.1f}GB", f"skipped {self.skipped}"]
        return " | ".join(parts)


def truncate_jsonl(path: Path, last_step: int) -> int:
    """Drop the records after ``last_step`` (atomically); returns how many were dropped."""
    from ..utils.atomic import write_text

    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):  # a line torn by a kill: dropped with the replayed steps
            pass
    if len(keep) != len(lines):
        write_text(path, "".join(keep))
    return len(lines) - len(keep)


class MetricsLog:
    """JSONL of step metrics plus TensorBoard (when installed); rank 0 only.

    ``resume_step``: the step a run resumed at. What an earlier run logged after it (the steps the resume
    replays) is cut off, in metrics.jsonl and in TensorBoard (``purge_step``), so each step appears once.
    """

    def __init__(self, folder: str | Path, tensorboard: bool = True, resume_step: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        truncate_jsonl(self.folder / "metrics.jsonl", resume_step)
        self.jsonl = (self.folder / "metrics.jsonl").open("a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.folder / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # pragma: no cover - tensorboard is a core dependency
                self.tb = None
        self.t0 = time.time()

    def write(self, stats: StepStats, extra: dict | None = None) -> None:
        rec = dict(stats.__dict__, **(extra or {}))
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k in ("loss", "lr", "grad_norm", "memory_gb"):
                self.tb.add_scalar(f"train/{k}", getattr(stats, k), stats.step)
            for k, v in (extra or {}).items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, stats.step)

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def plot_loss_curve(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Loss against step from a metrics JSONL (all resumed segments), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = {}, None
    for line in Path(metrics_jsonl).read_text().splitlines():
        rec = json.loads(line)
        steps[rec["step"]] = rec["loss"]  # a resumed run overwrites replayed steps
    xs = sorted(steps)
    losses = [steps[s] for s in xs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
