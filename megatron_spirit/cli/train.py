"""spirit-train: continued pretraining of a SpiRit-LM model on megatron-core.

    torchrun --nproc-per-node 8 -m megatron_spirit.cli.train configs/spiritlm_base_7b.yaml parallel.tp=2
    srun ... spirit-train CONFIG.yaml key=value ...      (one task per GPU; ranks from SLURM_* variables)
"""
from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spirit-train",
        description=(
            "Train (or continue training) a SpiRit-LM model. CONFIG is a YAML file of typed sections "
            "(model, parallel, data, optimizer, schedule, checkpoint, logging, precision, seed); any key can be "
            "overridden as section.key=value. Run under torchrun (one node) or srun (many); resumes from the "
            "latest complete checkpoint in checkpoint.dir (the newest intact one, loudly, when it is corrupt), else starts from checkpoint.finetune_from (a converted "
            "base model, weights only). SIGTERM/SIGUSR1 (to the ranks, or to torchrun) save a checkpoint at the "
            "next step and exit with code 3 (the sbatch script requeues on it); a failed save exits 1 naming the "
            "folder."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example overrides: schedule.train_steps=1000 parallel.tp=2 parallel.distributed_optimizer=true "
        "checkpoint.dir=/ckpt/run1 data.blend=/data/blend.json",
    )
    p.add_argument("config", nargs="?", help="YAML config (optional when every required key is overridden)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, applied in order")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-fallback", action="store_true", help="stop when the newest checkpoint is corrupt instead "
                   "of resuming from the newest intact one (checkpoint.fallback=false)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..training.config import ConfigError, load_train_config
    from ..utils.config_io import dump_yaml

    config = args.config
    overrides = list(args.overrides) + (["checkpoint.fallback=false"] if args.no_fallback else [])
    if config is not None and "=" in config:  # no YAML, only overrides
        overrides.insert(0, config)
        config = None
    try:
        cfg = load_train_config(config, overrides)
    except ConfigError as e:
        print(f"spirit-train: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    from ..parallel.runtime import read_env
    from ..training.datasets import check_training_data

    try:
        cfg.batch_layout(read_env().world_size)  # before any process group: a clear error, not a hang
    except ValueError as e:
        print(f"spirit-train: config error: {e}", file=sys.stderr)
        return 2
    try:
        # The tokenizer, the blend, every dataset whole and of this tokenizer; the warnings (datasets that predate
        # fingerprints) are logged once by the trainer, on rank 0, not by every rank here.
        check_training_data(cfg.data)
    except (ValueError, OSError) as e:
        print(f"spirit-train: data error: {e}", file=sys.stderr)
        return 2
    from ..checkpoint.checksums import CorruptCheckpoint
    from ..checkpoint.resume import SaveFailed
    from ..parallel import cpu
    from ..training.trainer import run

    try:
        evaluators = _evaluators(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"spirit-train: evaluation config error: {e}", file=sys.stderr)
        return 2
    from .torchrun import report_exit

    try:
        with cpu.compat():  # this entry's one switch for megatron-core without CUDA (undone on return)
            code = run(cfg, evaluators)
    except (CorruptCheckpoint, SaveFailed) as e:  # named files and folders say it all: no traceback
        print(f"spirit-train: error: {e}", file=sys.stderr)
        code = 1
    report_exit(code)  # for spirit-torchrun, which exits with it after a signal (torchrun itself exits 1)
    return code


def _evaluators(cfg) -> list:
    """The live-model evaluators of the config's ``evaluation`` section (built here: training may not import
    evaluation)."""
    out = []
    ev = cfg.evaluation
    if ev.subset_validation and cfg.schedule.eval_interval:
        from ..training.validation import SubsetValidation

        out.append(SubsetValidation(cfg))
    if ev.tasks:
        from ..evaluation.live import TaskEvaluator
        from ..evaluation.tasks import bench_paths, parse_tasks

        data = dict(d.split("=", 1) for d in ev.data)
        for bench, folder in bench_paths(parse_tasks(ev.tasks), data).items():
            if not folder.is_dir():
                raise FileNotFoundError(f"evaluation.data: {bench}={folder} is not a folder")
        out.append(TaskEvaluator(ev.tasks, data, cfg.data.tokenizer, ev.interval))
    return out


if __name__ == "__main__":
    sys.exit(main())
