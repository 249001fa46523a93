"""Stage train: training throughput of the 7B-shaped slice through ``spirit-train``, as a user runs it.

A LLaMA-sized sentencepiece model (32,000 pieces) is extended with the SpiRit expressive vocabulary
(``spirit-make-tokenizer``), a generated text corpus is built into a Megatron dataset (``spirit-data build``),
and ``spirit-train`` runs the slice (one process, NCCL, the layer spec it picks) for warm-up + timed steps with
no checkpoint. Step times come from the trainer's own ``metrics.jsonl``; the figures are the median of the timed
steps: tokens/s, TFLOP/s (``model.flops``), MFU against the env stage's measured peak, peak memory
(``torch.cuda.max_memory_allocated``), beside the planner's predicted step time and memory for the same slice.

    python benchmarks/gpu/stage_train.py --result train.json --env env.json [--dry-run] [--layers 8]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from common import ROOT, gpu_facts, stage_main
from workload import make_workload, planner_prediction


def _cli(module: str, *args: str, log: Path) -> None:
    with open(log, "a") as f:
        r = subprocess.run([sys.executable, "-m", f"megatron_spirit.cli.{module}", *args], cwd=ROOT,
                           stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"spirit {module} {' '.join(args[:2])} failed ({r.returncode}); see {log}:\n"
                           + log.read_text()[-3000:])


def prepare_data(work: Path, base_vocab: int, documents: int) -> tuple[Path, Path]:
    """A SpiRit tokenizer over a generated base model of ``base_vocab`` pieces and a text dataset built with it."""
    from megatron_spirit.synth.text import documents as gen_documents
    from megatron_spirit.synth.text import sentences
    from megatron_spirit.tokenizer.sentencepiece_bpe import train_sentencepiece

    log = work / "prepare.log"
    pad = base_vocab if base_vocab > 600 else None
    spm = train_sentencepiece(sentences(3000, seed=2), work / "base.model", vocab_size=600, pad_to=pad)
    tok = work / "tokenizer"
    _cli("make_tokenizer", "--base-model", str(spm), "--flavor", "expressive", "--out", str(tok), log=log)
    corpus = work / "text.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in gen_documents(documents, seed=3)))
    prefix = work / "text"
    _cli("data", "build", "--kind", "text", "--input", str(corpus), "--out", str(prefix), "--tokenizer", str(tok),
         "--no-progress", log=log)
    return tok, prefix


def timed_figures(metrics: Path, warmup: int, flops_per_token: float, peak_tflops: float) -> dict:
    recs = [json.loads(line) for line in metrics.read_text().splitlines()]
    timed = [r for r in recs if r["step"] > warmup]
    if not timed:
        raise RuntimeError(f"{metrics}: no step after the {warmup} warm-up steps")
    seconds = statistics.median(r["seconds"] for r in timed)
    tps = timed[0]["tokens"] / seconds
    tflops = tps * flops_per_token / 1e12
    return {"step_seconds": seconds, "step_seconds_all": [r["seconds"] for r in recs], "tokens_per_s": tps,
            "tflops": tflops, "mfu": tflops / peak_tflops, "peak_memory_gib": max(r["memory_gb"] for r in recs),
            "losses": [r["loss"] for r in recs], "skipped": timed[-1]["skipped"]}


def run(args) -> dict:
    from megatron_spirit.parallel.launch import free_port

    memory, peak = gpu_facts(args)
    w = make_workload(args.dry_run, memory, peak, args.layers)
    work = args.work / "train"
    work.mkdir(parents=True, exist_ok=True)
    tok, prefix = prepare_data(work, w.base_vocab, 300 if args.dry_run else 2000)
    steps = w.warmup_steps + w.timed_steps
    cfg = {
        "model": {"name": w.model.name, "num_layers": w.model.num_layers, "seq_length": w.model.seq_length},
        "precision": w.precision,
        "data": {"tokenizer": str(tok), "prefixes": [str(prefix)], "split": "100,0,0"},
        "schedule": {"train_steps": steps, "global_batch_size": w.global_batch, "micro_batch_size": w.micro_batch},
        "checkpoint": {"dir": str(work / "ckpt"), "save_interval": 0, "save_on_exit": False},
        "logging": {"dir": str(work / "logs"), "log_interval": 1, "tensorboard": False, "plot_loss": False},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(k, None)
    log = work / "train.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "megatron_spirit.cli.train", str(work / "config.yaml")],
                           cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    text = log.read_text()
    print("\n".join(text.splitlines()[-(steps + 6):]))
    if r.returncode:
        raise RuntimeError(f"spirit-train exited with {r.returncode}:\n{text[-3000:]}")
    spec = next((line.split("layer spec ")[1].split(";")[0] for line in text.splitlines() if "layer spec " in line),
                None)
    padded_from = f"vocab {w.padded_vocab} (padded from {w.vocab_size})"
    if padded_from not in text:  # the FLOPs and the HF baseline assume exactly these embedding rows
        raise RuntimeError(f"spirit-train did not report '{padded_from}': the workload's vocabulary is off")
    measured = timed_figures(work / "logs" / "metrics.jsonl", w.warmup_steps, w.flops_per_token, peak)
    predicted = planner_prediction(w, memory, peak)
    calibrated = predicted["efficiency"] * predicted["step_seconds"] / measured["step_seconds"]
    return {"workload": w.describe(), "layer_spec": spec, "peak_tflops": peak, **measured,
            "planner": {**predicted, "step_error": predicted["step_seconds"] / measured["step_seconds"] - 1,
                        "calibrated_efficiency": calibrated}}


if __name__ == "__main__":
    stage_main(run, __doc__)
