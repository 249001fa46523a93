#!/usr/bin/env python
"""The whole system at toy scale on CPU, with the real code paths; every artefact lands under --out.

Each stage writes its own folder and a ``.done`` marker last, so a re-run resumes where it stopped.
Stages are added here as the system grows; each prints what it made and where.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def stage(name: str):
    """Run the decorated stage unless its ``.done`` marker exists; print what it made."""

    def wrap(fn):
        def run(out: Path, ctx: dict) -> None:
            folder = out / name
            done = folder / ".done"
            if done.is_file():
                ctx.update(json.loads(done.read_text()))
                print(f"[{name}] done already: {folder}")
                return
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            result = fn(folder, ctx) or {}
            ctx.update(result)
            done.write_text(json.dumps(result, default=str))
            print(f"[{name}] {time.time() - t0:.1f}s -> {folder}")
            for k, v in result.items():
                print(f"    {k}: {v}")

        run.__name__ = name
        return run

    return wrap


@stage("01_text_corpus")
def text_corpus(folder: Path, ctx: dict) -> dict:
    from megatron_spirit.synth.text import documents

    path = folder / "text.jsonl"
    with path.open("w") as f:
        for doc in documents(2000, seed=0):
            f.write(json.dumps({"text": doc}) + "\n")
    return {"text_corpus": str(path)}


@stage("02_tokenizer")
def tokenizer(folder: Path, ctx: dict) -> dict:
    from megatron_spirit.tokenizer.build import build_tokenizer
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
    from megatron_spirit.tokenizer.sentencepiece_bpe import train_sentencepiece

    texts = [json.loads(line)["text"] for line in open(ctx["text_corpus"])]
    base = train_sentencepiece(texts, folder / "base" / "tokenizer.model", vocab_size=1000)
    out = build_tokenizer(base, folder / "spirit_expressive", "expressive")
    tok = SpiritTokenizer(out)
    sample = "[Text]the cat sat[Speech][St3][Hu12][Pi7][Hu30][Text]on the mat"
    ids = tok.encode(sample, bos=True)
    return {
        "base_model": str(base),
        "tokenizer": str(out),
        "vocab": f"{tok.vocab.base_size} base + SpiRit pieces = {tok.vocab_size}; export size {tok.vocab.export_size}",
        "example": f"{sample} -> {ids}",
    }


def cli(module: str, *args, log: Path | None = None) -> str:
    """Run one of the project's commands as users do, in this process (``megatron_spirit.cli.X.main``) to skip
    a fresh interpreter's import time; the distributed trainer runs under torchrun instead. Fails loudly."""
    import contextlib
    import importlib
    import io

    if module == "torch.distributed.run":
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
        r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
        code, text = r.returncode, r.stdout + r.stderr
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                code = importlib.import_module(module).main(list(args))
            except SystemExit as e:  # argparse errors
                code = e.code
        text = buf.getvalue()
    if log is not None:
        log.write_text(text)
    if code:
        raise SystemExit(f"demo: `{module} {' '.join(args)}` failed ({code}):\n{text[-4000:]}")
    return text


@stage("03_speech_corpus")
def speech_corpus(folder: Path, ctx: dict) -> dict:
    cli("megatron_spirit.cli.units", "synth-corpus", "--out", str(folder), "--sentences", "48", "--seed", "5")
    manifest = folder / "manifest.jsonl"
    n = sum(1 for _ in open(manifest))
    return {"speech_manifest": str(manifest), "utterances": n,
            "note": "espeak-ng voices; word times from the synthesiser's phoneme events"}


@stage("04_units")
def units(folder: Path, ctx: dict) -> dict:
    from megatron_spirit.speech.hubert import save_random_hubert, tiny_hubert_config

    hubert = save_random_hubert(tiny_hubert_config(), folder / "hubert_tiny_random")
    m, h = ctx["speech_manifest"], str(hubert)
    u = "megatron_spirit.cli.units"
    cli(u, "train-hubert-kmeans", "--manifest", m, "--model", h, "--layer", "2", "--k", "50", "--niter", "10",
        "--out", str(folder / "hubert_kmeans"), "--device", "cpu")
    cli(u, "train-style", "--manifest", m, "--model", h, "--layer", "1", "--k", "8", "--niter", "10",
        "--out", str(folder / "style_kmeans"), "--device", "cpu")
    cli(u, "train-pitch", "--manifest", m, "--method", "acf", "--steps", "150", "--batch-size", "8",
        "--channels", "16", "--code-dim", "8", "--segment", "128", "--heldout", "4",
        "--out", str(folder / "pitch_vqvae"), "--device", "cpu")
    cli(u, "extract", "--manifest", m, "--out", str(folder / "units"), "--hubert-model", h,
        "--kmeans", str(folder / "hubert_kmeans"), "--pitch", str(folder / "pitch_vqvae"),
        "--style", str(folder / "style_kmeans"), "--flavor", "expressive", "--device", "cpu")
    units_manifest = next((folder / "units").glob("units-*.jsonl"))
    first = json.loads(units_manifest.open().readline())
    from megatron_spirit.speech.manifest import UnitsRecord

    rec = UnitsRecord.from_json(first)
    return {"hubert_model": h, "units_manifest": str(units_manifest),
            "example": f"{rec.id}: {rec.merged('expressive').string()[:160]}..."}


@stage("05_datasets")
def datasets(folder: Path, ctx: dict) -> dict:
    tok = ctx["tokenizer"]
    d = "megatron_spirit.cli.data"
    common = ["--tokenizer", tok, "--no-progress"]
    cli(d, "build", "--kind", "text", "--input", ctx["text_corpus"], "--out", str(folder / "text"), *common)
    # The units manifest (with its inline word alignments) parsed once into a pack; speech kinds build from it.
    pack = str(folder / "units.spiritpack")
    cli(d, "pack", "--input", ctx["units_manifest"], "--out", pack, "--no-progress")
    cli(d, "build", "--kind", "speech", "--input", pack, "--out", str(folder / "speech"), *common)
    cli(d, "build", "--kind", "interleaved", "--input", pack, "--out", str(folder / "interleaved"),
        "--variants", "2", "--text-span", "2,5", "--speech-span", "2,4", *common)
    blend = folder / "blend.json"
    report = cli(d, "mixture", "--speech", str(folder / "speech"), "--interleaved", str(folder / "interleaved"),
                 "--text", str(folder / "text"), "--steps", str(TRAIN_STEPS), "--seq-length", str(SEQ),
                 "--global-batch", str(GLOBAL_BATCH), "--split", "98,2,0", "--out", str(blend))
    cli(d, "stats", str(folder / "text"), str(folder / "speech"), str(folder / "interleaved_v0"),
        "--tokenizer", tok, "--out", str(folder / "stats"))
    pngs = sorted(str(p) for p in (folder / "stats").parent.glob("stats*.png")) or sorted(
        str(p) for p in folder.rglob("*.png"))
    return {"blend": str(blend), "mixture": report.strip().splitlines()[-4:], "stats_plot": pngs[0] if pngs else None}


@stage("06_base_model")
def base_model(folder: Path, ctx: dict) -> dict:
    """A tiny random LLaMA in Hugging Face format stands in for LLaMA-2 7B, then goes through the real converter."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from megatron_spirit.model.config import get_model_config
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    mc = get_model_config(MODEL)
    base_size = SpiritTokenizer(ctx["tokenizer"]).vocab.base_size
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=base_size, hidden_size=mc.hidden_size, intermediate_size=mc.ffn_hidden_size,
        num_hidden_layers=mc.num_layers, num_attention_heads=mc.num_attention_heads,
        num_key_value_heads=mc.query_groups, max_position_embeddings=SEQ, rms_norm_eps=mc.norm_eps,
        rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2))
    hf.save_pretrained(folder / "hf_llama_tiny")
    cli("megatron_spirit.cli.convert", "hf-to-megatron", "--hf", str(folder / "hf_llama_tiny"), "--tokenizer",
        ctx["tokenizer"], "--out", str(folder / "megatron"), "--tp", "2", "--rope-base", "100000", "--no-progress")
    return {"hf_base": str(folder / "hf_llama_tiny"), "megatron_base": str(folder / "megatron")}


@stage("07_train")
def train(folder: Path, ctx: dict) -> dict:
    cfg = {
        "model": {"name": MODEL, "seq_length": SEQ, "rope_base": 100000.0},
        "parallel": {"tp": 2, "pp": 1},
        "precision": "fp32",
        "data": {"tokenizer": ctx["tokenizer"], "blend": ctx["blend"]},
        "optimizer": {"lr": 3.0e-3, "min_lr": 3.0e-3},
        "schedule": {"train_steps": TRAIN_STEPS, "global_batch_size": GLOBAL_BATCH, "micro_batch_size": 4},
        "checkpoint": {"dir": str(folder / "ckpt"), "finetune_from": ctx["megatron_base"], "save_interval": 100,
                       "keep_last": 2},
        "logging": {"dir": str(folder / "logs"), "log_interval": 25},
    }
    import yaml

    (folder / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = cli("torch.distributed.run", "--nproc-per-node", "2", "-m", "megatron_spirit.cli.train",
              str(folder / "train.yaml"), log=folder / "train.log")
    steps = [line.split("]:", 1)[-1].strip() for line in out.splitlines() if "step " in line and "| loss" in line]
    print("\n".join("    " + line for line in steps))
    return {"checkpoints": str(folder / "ckpt"), "loss_curve": str(folder / "logs" / "loss_curve.png"),
            "first": steps[0] if steps else None, "last": steps[-1] if steps else None}


@stage("08_export")
def export(folder: Path, ctx: dict) -> dict:
    out = folder / "hf"
    cli("megatron_spirit.cli.convert", "megatron-to-hf", "--ckpt", ctx["checkpoints"], "--out", str(out),
        "--no-progress")
    return {"hf_model": str(out)}


@stage("09_generate")
def generate(folder: Path, ctx: dict) -> dict:
    from transformers import AutoModelForCausalLM

    from megatron_spirit.evaluation.generate import GenerateConfig, generate as gen
    from megatron_spirit.speech.manifest import UnitsRecord
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    model = AutoModelForCausalLM.from_pretrained(ctx["hf_model"]).eval()
    tok = SpiritTokenizer(ctx["tokenizer"])
    rec = UnitsRecord.from_json(open(ctx["units_manifest"]).readline())
    speech_prompt = "[Speech]" + rec.merged("expressive").string()[:200].rsplit("[", 1)[0]
    text_prompt = "[Text]the old man found"
    # The release's sampling (temperature 0.8, top-p 0.95); speech → speech, text → text, then text → free.
    speech = gen(model, tok, speech_prompt, "speech", GenerateConfig(max_new_tokens=30))
    text = gen(model, tok, text_prompt, "text", GenerateConfig(max_new_tokens=20))
    free = gen(model, tok, text_prompt, "free", GenerateConfig(max_new_tokens=40, min_speech_units=0))
    (folder / "samples.json").write_text(json.dumps({"speech": speech.to_json(), "text": text.to_json(),
                                                     "free": free.to_json()}, indent=1))
    return {"speech_prompt": speech_prompt[:80] + "...", "speech_continuation": speech.text[:160],
            "text_prompt": text_prompt, "text_continuation": text.text,
            "free_segments": [(s.modality, s.content[:40]) for s in free.segments]}


@stage("10_eval")
def evaluation(folder: Path, ctx: dict) -> dict:
    """spirit-eval on toy benchmarks in the released layouts, made from the demo's own vocabulary: corpus words vs
    one-vowel-changed non-words (sWUGGY-style), sentences vs two swapped words (sBLIMP-style), two-sentence
    stories with a fitting or a scrambled ending (cross-modal StoryCloze files); espeak speaks them. The
    converted base model (before training, scored through megatron-core) and the trained export, side by side."""
    from megatron_spirit.evaluation import layouts
    from megatron_spirit.synth.espeak import synthesize
    from megatron_spirit.synth.minimal_pairs import sentence_pairs, stories, word_pairs

    def speak(text, voice="v1"):
        return synthesize(text, "en-us" if voice == "v1" else "en-us+f3").audio

    texts = [json.loads(line)["text"] for line in open(ctx["text_corpus"])]
    words = word_pairs(texts, 40, seed=1)
    layouts.lexical(folder / "zr", [(f"w{i}", w, nw, 1) for i, (w, nw) in enumerate(words)], audio=speak)
    layouts.syntactic(folder / "zr", [(f"s{i}", "order", "swap", g, b)
                                      for i, (g, b) in enumerate(sentence_pairs(20, seed=2))], voices=("v1",))
    layouts.cross_modal(folder / "cm", [(str(i), c, g, b) for i, (c, g, b) in enumerate(stories(12, seed=3))],
                        audio=speak)
    units_dir = Path(ctx["hubert_model"]).parent
    speech = ["--hubert-model", ctx["hubert_model"], "--kmeans", str(units_dir / "hubert_kmeans"), "--pitch",
              str(units_dir / "pitch_vqvae"), "--style", str(units_dir / "style_kmeans"), "--flavor", "expressive",
              "--device", "cpu"]
    for bench, root in (("swuggy", folder / "zr" / "lexical"), ("cm-tsc", folder / "cm")):
        cli("megatron_spirit.cli.eval", "units", "--bench", bench, "--root", str(root), "--out",
            str(folder / "units" / bench), *speech)
    tasks = ["--tasks", "swuggy:T,swuggy:S,sblimp:T,tsc:T,tsc:T2S,tsc:S2T", "--data",
             f"swuggy={folder / 'units' / 'swuggy'}", "--data", f"sblimp={folder / 'zr' / 'syntactic'}",
             "--data", f"cm-tsc={folder / 'units' / 'cm-tsc'}"]
    cli("megatron_spirit.cli.eval", "score", "--megatron", ctx["megatron_base"], "--label", "base (untrained)",
        *tasks, "--out", str(folder / "base"))
    cli("megatron_spirit.cli.eval", "score", "--model", ctx["hf_model"], "--label", "demo (200 steps)", *tasks,
        "--out", str(folder / "trained"))
    table = cli("megatron_spirit.cli.eval", "table", str(folder / "base"), str(folder / "trained"),
                "--no-reference", "--out", str(folder / "table"))
    print("\n".join("    " + line for line in table.strip().splitlines()))
    acc = {name: round(100 * entry["normalised"]["accuracy"], 1) for name, entry in
           json.loads((folder / "trained" / "results.json").read_text())["tasks"].items()}
    base = json.loads((folder / "base" / "results.json").read_text())["tasks"]["swuggy:T"]
    return {"table": str(folder / "table" / "table.md"), "accuracy (normalised, %)": acc,
            "swuggy:T before training": round(100 * base["normalised"]["accuracy"], 1),
            "swuggy:T pairs": len(words)}


@stage("11_report")
def report(folder: Path, ctx: dict) -> dict:
    return {"data statistics plot": ctx.get("stats_plot"), "loss curve": ctx.get("loss_curve"),
            "exported model": ctx.get("hf_model"), "training": f"{ctx.get('first')}  →  {ctx.get('last')}",
            "comprehension table": ctx.get("table")}


MODEL = "tiny"
SEQ = 128
GLOBAL_BATCH = 8
TRAIN_STEPS = 200
STAGES = [text_corpus, tokenizer, speech_corpus, units, datasets, base_model, train, export, generate, evaluation,
          report]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="folder for every artefact (re-running resumes)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx: dict = {}
    t0 = time.time()
    for run in STAGES:
        run(out, ctx)
    print(f"demo finished in {time.time() - t0:.1f}s; artefacts under {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
