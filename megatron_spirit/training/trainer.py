"""The training loop: a small composition of megatron-core pieces.

    setup()  → torch.distributed + parallel_state → tokenizer → GPTModel chunks (model.build) → megatron DDP →
               megatron optimizer (distributed or not) + LR scheduler → data → resume / finetune start
    step()   → megatron's forward-backward schedule over the micro-batches → non-finite check → clip + step
    loop     → log, checkpoint every N steps, on SIGTERM/USR1 save and exit with REQUEUE_EXIT_CODE (Ctrl-C: 130)

Loss is averaged per token over the whole global batch (``calculate_per_token_loss``), so a step is the same
computation whatever the TP/PP/DP layout; the data position is samples consumed, so a resume continues with
the next sample rather than replaying.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist

from ..checkpoint.folder import CheckpointDir
from ..utils.config_io import dump_yaml
from .config import TrainConfig
from .evaluators import Evaluator, run_evaluators
from .signals import REQUEUE_EXIT_CODE, StopRequest


def log0(*msg) -> None:
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*msg, flush=True)


@dataclass
class TrainResult:
    step: int
    losses: dict  # step -> loss (this process's view; complete on the last pipeline stage's rank 0)
    exit_code: int


class Trainer:
    def __init__(self, cfg: TrainConfig, evaluators: Sequence[Evaluator] = ()):
        self.cfg = cfg
        self.evaluators = list(evaluators)  # run on the live model when due (evaluators.py)

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from megatron.core import parallel_state
        from megatron.core.optimizer import OptimizerConfig as MOptimizerConfig
        from megatron.core.optimizer import get_megatron_optimizer
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

        from ..model.build import attach_schedule_hooks, build_model, wrap_ddp
        from ..parallel.runtime import init_distributed, init_model_parallel
        from ..tokenizer.tokenizer import SpiritTokenizer
        from ..model.flops import flops_per_token
        from .batches import TrainData

        cfg = self.cfg
        self.env = init_distributed()
        world = dist.get_world_size()
        self.dp, self.num_micro = cfg.batch_layout(world)
        init_model_parallel(cfg.parallel, seed=cfg.seed)
        self.model_cfg = cfg.model_config
        self.tokenizer = SpiritTokenizer(cfg.data.tokenizer)
        self.ckpt = CheckpointDir(cfg.checkpoint.dir)
        vocab, pad = self._vocab_rows()
        built = build_model(self.model_cfg, cfg.parallel, vocab_size=vocab, pad_vocab=pad,
                            dtype=cfg.precision, calculate_per_token_loss=True)
        self.spec = built.spec
        self.vocab_size = built.vocab_size
        self.model = wrap_ddp(built.chunks, cfg.parallel)
        self.tcfg = built.config
        o = cfg.optimizer
        self.optimizer = get_megatron_optimizer(
            MOptimizerConfig(
                optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay,
                adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2, adam_eps=o.adam_eps, clip_grad=o.clip_grad,
                bf16=cfg.precision == "bf16", params_dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float32,
                use_distributed_optimizer=cfg.parallel.distributed_optimizer,
                overlap_param_gather=cfg.parallel.overlap_param_gather,
            ),
            self.model,
        )
        attach_schedule_hooks(self.model, self.optimizer)
        s = cfg.schedule
        decay = s.decay_steps or max(1, s.train_steps - s.warmup_steps)
        style = s.lr_schedule
        self.scheduler = OptimizerParamScheduler(
            self.optimizer, init_lr=0.0 if s.warmup_steps else o.lr, max_lr=o.lr, min_lr=o.min_lr,
            lr_warmup_steps=s.warmup_steps, lr_decay_steps=s.warmup_steps + decay, lr_decay_style=style,
            start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=s.train_steps, wd_incr_style="constant",
        )
        self.data = TrainData(cfg.data, self.model_cfg.seq_length, self.tokenizer,
                              global_batch=s.global_batch_size, micro_batch=s.micro_batch_size,
                              num_micro=self.num_micro,
                              train_steps=s.train_steps, eval_steps=s.eval_steps if s.eval_interval else 0,
                              eval_interval=s.eval_interval, seed=cfg.data_seed,
                              warn=lambda w: log0(f"warning: {w}"))
        seq = self.model_cfg.seq_length
        self.flops_per_token = flops_per_token(self.model_cfg, seq, self.vocab_size)  # model FLOPs: MFU
        self.hardware_flops_per_token = flops_per_token(self.model_cfg, seq, self.vocab_size, cfg.parallel.recompute)
        self.step = 0
        self.skipped = 0
        self.pp_last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
        self._resume()

    def _vocab_rows(self) -> tuple[int, bool]:
        """(rows, pad?) for the embedding: the resumed checkpoint's padded size when this TP can split it.

        Padded rows take part in the softmax, so keeping their number is what makes a resume at another TP
        exact; a TP that cannot split the saved size pads anew (and the padded rows start fresh).
        """
        from ..checkpoint.checksums import CorruptCheckpoint
        from ..checkpoint.resume import read_state

        for latest in self.ckpt.candidates():  # the first one whose state reads (the resume falls back likewise)
            try:
                saved = read_state(latest).padded_vocab
            except CorruptCheckpoint:
                if not self.cfg.checkpoint.fallback:
                    break
                continue
            if saved and saved % self.cfg.parallel.tp == 0 and saved >= self.tokenizer.vocab_size:
                return int(saved), False
            if saved:
                log0(f"warning: {latest} has {saved} embedding rows, which tp={self.cfg.parallel.tp} cannot "
                     "split; padding anew (losses after the resume differ slightly from the original layout)")
            break
        return self.tokenizer.vocab_size, True

    def _resume(self) -> None:
        from ..checkpoint.weights import load_weights

        cfg = self.cfg
        if dist.get_rank() == 0:
            for p in self.ckpt.clean_stale():
                log0(f"removed the unfinished checkpoint {p}")
        dist.barrier()
        latest, state = self._load_newest_intact()
        if latest is not None:
            self.step = int(state.step)
            self.skipped = int(state.skipped)
            if state.consumed_samples != self.step * cfg.schedule.global_batch_size:
                raise RuntimeError(
                    f"{latest}: consumed_samples {state.consumed_samples} does not match step {self.step} "
                    f"× schedule.global_batch_size {cfg.schedule.global_batch_size}: the global batch changed"
                )
            log0(f"resumed from {latest} at step {self.step} (saved layout {state.to_common()['layout']})")
        elif cfg.checkpoint.finetune_from:
            ckpt_path = load_weights(self.model, cfg.checkpoint.finetune_from, fallback=cfg.checkpoint.fallback,
                                     warn=log0)
            # bf16: the optimizer copied its fp32 main weights from the random init; refresh them from the loaded
            # weights, or the first step overwrites them (megatron's own finetune load does the same).
            self.optimizer.reload_model_params()
            log0(f"initialised weights from {ckpt_path} (weights only; optimizer, step and data start fresh)")
        else:
            log0("starting from random initialisation")

    def _load_newest_intact(self):
        """Load the newest checkpoint that is intact (checksums, readable files): the one ``latest`` names, else,
        with a loud warning, the next older complete one; ``checkpoint.fallback: false`` stops at the first error.
        Returns (the folder loaded, its TrainingState), (None, None) when there is none."""
        from ..checkpoint import resume
        from ..checkpoint.checksums import CorruptCheckpoint, fallback_warning

        candidates = self.ckpt.candidates()
        for i, path in enumerate(candidates):
            try:
                return path, resume.load(path, self.model, self.optimizer, self.scheduler)
            except CorruptCheckpoint as e:
                if not self.cfg.checkpoint.fallback or i + 1 == len(candidates):
                    raise
                log0(fallback_warning(e, candidates[i + 1]))
        return None, None

    # ----------------------------------------------------------------------------------------------- step
    def _forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        output = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
        return output, partial(self._loss, batch["loss_mask"])

    @staticmethod
    def _loss(loss_mask, output_tensor):
        losses = output_tensor.float()
        mask = loss_mask.view(-1).float()
        loss_sum = torch.sum(losses.view(-1) * mask)
        tokens = mask.sum().to(torch.int)
        report = torch.cat([loss_sum.detach().view(1), tokens.float().view(1)])
        return loss_sum, tokens, {"lm loss": report}

    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step. Returns (loss, grad norm, skipped)."""
        from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32
        from megatron.core.pipeline_parallel import get_forward_backward_func

        for m in self.model:
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        iters = self.data.train_iterators(self.step, len(self.model))
        results = get_forward_backward_func()(
            forward_step_func=self._forward_step,
            data_iterator=iters if len(self.model) > 1 else iters[0],
            model=self.model if len(self.model) > 1 else self.model[0],
            num_microbatches=self.num_micro,
            seq_length=self.model_cfg.seq_length,
            micro_batch_size=self.cfg.schedule.micro_batch_size,
            forward_only=False,
        )
        loss = self._reduce_loss(results)
        opt = self.optimizer
        opt.prepare_grads()
        grad_norm = opt.get_grad_norm()
        if not (math.isfinite(loss) and grad_norm is not None and math.isfinite(grad_norm)):
            self.skipped += 1
            return loss, float("nan") if grad_norm is None else grad_norm, True
        if self.cfg.optimizer.clip_grad > 0:
            for sub in getattr(opt, "chained_optimizers", [opt]):
                params = sub.get_parameters()
                if params:
                    clip_grad_by_total_norm_fp32(params, max_norm=self.cfg.optimizer.clip_grad, total_norm=grad_norm)
        opt.step_with_ready_grads()
        self.scheduler.step(increment=1)
        return loss, grad_norm, False

    def _reduce_loss(self, results) -> float:
        return global_loss(results, self.pp_last)

    # ----------------------------------------------------------------------------------------------- loop
    def train(self) -> TrainResult:
        from .metrics import MetricsLog, StepStats, peak_tflops, plot_loss_curve

        cfg = self.cfg
        stop = StopRequest()
        rank0 = dist.get_rank() == 0
        log_dir = Path(cfg.logging.dir)
        # from the resumed step on: the steps a resume replays are logged once
        metrics = MetricsLog(log_dir, cfg.logging.tensorboard, resume_step=self.step) if rank0 else None
        if rank0:
            (log_dir / "config.yaml").write_text(dump_yaml(cfg))
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        peak = peak_tflops(device)
        world = dist.get_world_size()
        tokens_per_step = cfg.schedule.global_batch_size * self.model_cfg.seq_length
        log0(
            f"training {self.model_cfg.name} ({self.spec}) on {world} {device} process(es): tp={cfg.parallel.tp} "
            f"pp={cfg.parallel.pp} dp={self.dp} sp={cfg.parallel.sp} distributed_optimizer="
            f"{cfg.parallel.distributed_optimizer}; {self.num_micro} micro-batches of {cfg.schedule.micro_batch_size}"
            f" × {self.model_cfg.seq_length} tokens per step; model FLOPs/token {self.flops_per_token:.3e} "
            f"(model.flops.flops_per_token; MFU counts these); steps {self.step}→{cfg.schedule.train_steps}"
        )
        losses = {}
        exit_code = 0
        t_last = time.time()  # start of the current logging interval (saves and evals excluded)
        steps_since = 0
        while self.step < cfg.schedule.train_steps:
            t_step = time.time()
            loss, gnorm, skipped = self.train_step()
            now = time.time()
            self.step += 1
            steps_since += 1
            losses[self.step] = loss
            if skipped:
                log0(f"step {self.step}: non-finite loss or gradient (loss {loss}, grad norm {gnorm}): step skipped")
            lr = self.scheduler.get_lr(self.optimizer.param_groups[0])
            mem = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _rss()) / 2**30
            if metrics:  # every step goes to metrics.jsonl / TensorBoard; the console gets one line per interval
                metrics.write(StepStats(self.step, loss, lr, float(gnorm), tokens_per_step, now - t_step,
                                        self.skipped, mem))
            if self.step % cfg.logging.log_interval == 0 or self.step == cfg.schedule.train_steps:
                stats = StepStats(self.step, loss, lr, float(gnorm), tokens_per_step * steps_since, now - t_last,
                                  self.skipped, mem)
                log0(stats.line(self.flops_per_token, world, peak, self.hardware_flops_per_token))
                t_last, steps_since = now, 0
            if cfg.schedule.eval_interval and self.step % cfg.schedule.eval_interval == 0:
                self.evaluate()
            run_evaluators(self.evaluators, self.model, self.step, metrics)
            want_save = cfg.checkpoint.save_interval and self.step % cfg.checkpoint.save_interval == 0
            stopping = stop.agreed()
            if want_save or stopping:
                self.save()
            t_last += time.time() - now  # evaluation, checkpointing and the signal check are not training time
            if stopping:
                why = "so the job is requeued" if stopping == REQUEUE_EXIT_CODE else "(interrupted: not requeued)"
                log0(f"signal {stop.received or 'on another rank'}: saved at step {self.step}; exiting with "
                     f"{stopping} {why}")
                exit_code = stopping
                break
        else:
            if cfg.checkpoint.save_on_exit and not (
                cfg.checkpoint.save_interval and self.step % cfg.checkpoint.save_interval == 0
            ):
                self.save()
        stop.restore()
        if metrics:
            metrics.close()
            if cfg.logging.plot_loss and (log_dir / "metrics.jsonl").stat().st_size:
                png = plot_loss_curve(log_dir / "metrics.jsonl", log_dir / "loss_curve.png")
                log0(f"loss curve: {png}")
        return TrainResult(self.step, losses, exit_code)

    def save(self) -> Path:
        from ..checkpoint import resume
        from ..checkpoint.state import TrainingState

        if self.cfg.parallel.overlap_param_gather:
            for m in self.model:  # the all-gather of updated params is otherwise deferred to the next forward
                m.start_param_sync(force_sync=True)

        state = TrainingState(step=self.step, consumed_samples=self.step * self.cfg.schedule.global_batch_size,
                              skipped=self.skipped, padded_vocab=self.vocab_size)
        path = resume.save(self.ckpt, state, self.model, self.optimizer, self.scheduler,
                           keep_last=self.cfg.checkpoint.keep_last, describe=self._describe)
        log0(f"saved checkpoint {path}")
        return path

    def _describe(self, folder: Path) -> None:
        """Model config and tokenizer beside the tensors: ``spirit-convert megatron-to-hf`` needs nothing else."""
        from ..checkpoint.info import describe

        describe(folder, self.model_cfg, self.tokenizer, self.vocab_size, self.cfg.precision, {"step": self.step})

    @torch.no_grad()
    def evaluate(self) -> float:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        for m in self.model:
            m.eval()
        total = []
        for k in range(self.cfg.schedule.eval_steps):
            iters = self.data.valid_iterators(k, len(self.model))
            results = get_forward_backward_func()(
                forward_step_func=self._forward_step,
                data_iterator=iters if len(self.model) > 1 else iters[0],
                model=self.model if len(self.model) > 1 else self.model[0],
                num_microbatches=self.num_micro, seq_length=self.model_cfg.seq_length,
                micro_batch_size=self.cfg.schedule.micro_batch_size, forward_only=True,
            )
            total.append(self._reduce_loss(results))
        for m in self.model:
            m.train()
        val = sum(total) / max(len(total), 1)
        log0(f"step {self.step}: validation loss {val:.4f} (ppl {math.exp(min(val, 50)):.2f})")
        return val


def global_loss(results, pp_last: bool) -> float:
    """Global-batch per-token loss of a schedule's results, known on every rank (a non-finite one must skip
    everywhere); ``pp_last``: this rank is on the last pipeline stage (the one with losses)."""
    from megatron.core import parallel_state

    t = torch.zeros(2, dtype=torch.float64)
    if pp_last:
        for r in results:
            t += r["lm loss"].double().cpu()
    if torch.cuda.is_available():
        t = t.cuda()
    dist.all_reduce(t, group=parallel_state.get_data_parallel_group())
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=parallel_state.get_pipeline_model_parallel_group())
    return float(t[0] / max(t[1], 1.0))


def _rss() -> int:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss
    except ImportError:  # pragma: no cover
        return 0


def run(cfg: TrainConfig, evaluators: Sequence[Evaluator] = ()) -> int:
    """Set up, train, tear down; the process exit code (REQUEUE_EXIT_CODE after a signal-triggered save)."""
    from ..parallel.runtime import teardown

    trainer = Trainer(cfg, evaluators)
    try:
        trainer.setup()
        result = trainer.train()
    finally:
        teardown()
    return result.exit_code
