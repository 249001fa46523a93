"""spirit-eval: the paper's comprehension table for a checkpoint (docs/spec.md §5)."""
from __future__ import annotations

import argparse
import os
import sys

_FMT = argparse.RawDescriptionHelpFormatter

DESCRIPTION = """\
Score an exported SpiRit-LM model on sWUGGY, sBLIMP, spoken StoryCloze and topic-StoryCloze, in text, speech
and cross-modal versions, the way the paper does (docs/spec.md §5): each candidate's hypothesis tokens get their
log-probability given the context (log-softmax over the full vocabulary), summed and divided by the token count
(Table 4) or summed (Table 10); the higher candidate wins, a tie counts 0.5.

  1. spirit-eval units --bench swuggy --root zerospeech2021/lexical --out units/swuggy \\
        --hubert-model HUBERT --kmeans KMEANS [--flavor expressive --pitch P --style S]
     (once per benchmark: swuggy sblimp ssc tsc cm-ssc cm-tsc; the same extraction as spirit-units extract)
  2. spirit-eval score --model HF_DIR --tasks swuggy:T,swuggy:S,tsc:T2S \\
        --data swuggy=units/swuggy --data cm-tsc=units/cm-tsc --out results/run1
     (text-only tasks may point --data at the released folder itself)
  3. spirit-eval table results/run1 results/run2 --out results/compare
  spirit-eval mmlu --model HF_DIR --data mmlu/data --shots 5 --out results/mmlu   (local csv files)
  spirit-eval score --megatron CKPT --tp 2 --pp 2 ...   (under torchrun: a megatron-core checkpoint directly)
  spirit-eval fewshot asr|tts|ic --model HF_DIR --data units/librispeech --out results/asr   (Appendix B)
  spirit-eval generate --model HF_DIR --prompt "[Text]the old man" --modality text|speech|free

Prompts: <s> then [Text]/[Speech] wherever the modality changes: <s>[Speech]units, <s>[Text]word,
<s>[Text]context[Speech]ending-units, <s>[Speech]context-units[Text]ending.
"""


def _add_score_options(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("scoring choices (defaults follow the release; see README 'Evaluation')")
    g.add_argument("--no-bos", action="store_true", help="do not start prompts with <s>")
    g.add_argument("--switch-marker", choices=("context", "hypothesis"), default="context",
                   help="where the marker before cross-modal candidates goes: shared context (not scored) or each "
                   "candidate (scored)")
    g.add_argument("--softmax", choices=("full", "modality"), default="full",
                   help="log-softmax over the full vocabulary (release) or over the candidate's modality")
    g.add_argument("--normalise-text", action="store_true",
                   help="lower-case text and strip punctuation, as aligned training text")
    g.add_argument("--flavor", choices=("base", "expressive"), default=None,
                   help="units flavor (default: the units folders', else the tokenizer's)")
    g.add_argument("--story-speech", choices=("whole", "context"), default="whole",
                   help="StoryCloze S: whole spoken stories (slamkit pairs) or spoken context + spoken ending "
                   "(cross-modal files)")
    p = s.add_argument_group("speed (same scores whatever the setting)")
    p.add_argument("--no-share-context", action="store_true",
                   help="one row per candidate (default: a context is shared by its candidates when that saves "
                   "at least 16 tokens)")
    p.add_argument("--pack", action="store_true",
                   help="pack several requests into one row with a document mask (default off: length batching "
                   "without a mask was faster, benchmarks/bench_eval.py)")
    p.add_argument("--row-tokens", type=int, default=512, help="longest packed row (longer requests get a row each)")
    p.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per forward")


def parser() -> argparse.ArgumentParser:
    from ..evaluation.benchmarks import BENCHMARKS
    from ..evaluation.tasks import TASKS
    from .units import add_extractor_args

    p = argparse.ArgumentParser(prog="spirit-eval", description=DESCRIPTION, formatter_class=_FMT)
    sub = p.add_subparsers(dest="cmd", required=True)

    u = sub.add_parser("units", help="speech units of a benchmark's wavs (sharded, resumable)",
                       description="Reads the benchmark in its released layout, writes an audio manifest of its "
                       "wavs and extracts their units with spirit-units extract's code into --out, with "
                       "eval-units.json (benchmark, folder, flavor, speech tokenizer fingerprint).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    u.add_argument("--bench", required=True, choices=BENCHMARKS,
                   help="swuggy/sblimp: ZeroSpeech lexical/syntactic; ssc/tsc: slamkit '<int>_…wav' pairs; "
                   "cm-ssc/cm-tsc: cross-modal *_mutual/_correct/_incorrect files; librispeech: "
                   "SPEAKER/CHAPTER/*.trans.txt + flac/wav (fewshot asr, tts); intents: wavs + labels.csv "
                   "(fewshot ic)")
    u.add_argument("--root", required=True, help="the benchmark's released folder")
    u.add_argument("--split", default="dev", help="ZeroSpeech split (dev or test)")
    u.add_argument("--out", required=True, help="output folder")
    add_extractor_args(u)

    s = sub.add_parser("score", help="score a model on tasks → results.json, per-item JSONL, tables",
                       description="Tasks: " + ", ".join(f"{t}:{m}" for t, ms in TASKS.items() for m in ms)
                       + ". --data names each benchmark's folder (a 'spirit-eval units' output, or for text "
                       "tasks the released folder): swuggy, sblimp, ssc/tsc (S), cm-ssc/cm-tsc (T, T2S, S2T).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="exported Hugging Face model folder")
    which.add_argument("--megatron", metavar="CKPT",
                       help="megatron-core checkpoint (or training folder: its newest); run under torchrun, "
                       "world = tp × pp × data-parallel replicas (items are split over the replicas)")
    s.add_argument("--tp", type=int, default=1, help="tensor parallelism for --megatron")
    s.add_argument("--pp", type=int, default=1, help="pipeline parallelism for --megatron")
    s.add_argument("--tokenizer", help="SpiRit tokenizer folder (default: the model folder, or the checkpoint's "
                   "tokenizer/ copy)")
    s.add_argument("--tasks", required=True, help="comma-separated TASK:MODALITY list")
    s.add_argument("--data", action="append", default=[], metavar="BENCH=DIR", help="a benchmark's folder")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--split", default="dev", help="ZeroSpeech split read from released folders")
    s.add_argument("--units-fingerprint", help="refuse units whose speech tokenizer fingerprint differs")
    s.add_argument("--label", help="row label in the tables (default: the model folder's name)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    s.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    _add_score_options(s)

    m = sub.add_parser("mmlu", help="k-shot MMLU from local csv files (published layout)",
                       description="DIR/dev/<subject>_dev.csv holds the shots, DIR/<split>/<subject>_<split>.csv the "
                       "questions (no header: question,A,B,C,D,answer). One forward per question: the four "
                       "letters' next-token log-probabilities after 'Answer:'.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("--model", required=True, help="exported Hugging Face model folder")
    m.add_argument("--tokenizer", help="SpiRit tokenizer folder (default: the model folder)")
    m.add_argument("--data", required=True, help="MMLU data folder (holding dev/ and the split's folder)")
    m.add_argument("--shots", type=int, default=5, help="examples from dev/ before each question")
    m.add_argument("--split", default="test", help="questions' folder: test or val")
    m.add_argument("--subjects", help="comma-separated subjects (default: all)")
    m.add_argument("--max-tokens", type=int, default=4096, help="shots are dropped while a prompt is longer")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--label", help="row label in the tables (default: the model folder's name)")
    m.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    m.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    m.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per forward")

    f = sub.add_parser("fewshot", help="few-shot ASR (WER), TTS (units) or intent classification (exact match)",
                       description="The paper's Appendix B prompts (docs/spec.md §5), greedy generation in the "
                       "target modality. --data: the 'spirit-eval units' output of a LibriSpeech-layout folder "
                       "(--bench librispeech; asr, tts) or of an intents folder (--bench intents: wavs + "
                       "labels.csv with filename,label; ic). tts writes the generated units: the paper's CER "
                       "needs a unit vocoder and an ASR model, not shipped here.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("task", choices=("asr", "tts", "ic"))
    f.add_argument("--model", required=True, help="exported Hugging Face model folder")
    f.add_argument("--tokenizer", help="SpiRit tokenizer folder (default: the model folder)")
    f.add_argument("--data", required=True, help="units folder of the set (spirit-eval units output)")
    f.add_argument("--shots", type=int, default=None, help="shots per item (default: the paper's, 10 / 10 / 30)")
    f.add_argument("--max-items", type=int, default=None, help="score only the first N utterances (by id)")
    f.add_argument("--max-new-tokens", type=int, default=None, help="generation length (default 128/256/8)")
    f.add_argument("--seed", type=int, default=0, help="seed of the shots' draw")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    f.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))

    g = sub.add_parser("generate", help="continue a prompt in text, speech or free modality, as the release does",
                       description="Prompt: text, [Text]/[Speech] markers and unit tokens ([Hu12][Pi3][St7]). "
                       "text/speech output appends that modality's marker unless the prompt already ends in it and "
                       "samples only its ids (speech: units only, no EOS); free output appends nothing and splits "
                       "the continuation into text and speech segments (docs/spec.md §7). Prints JSON.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--model", required=True, help="exported Hugging Face model folder")
    g.add_argument("--tokenizer", help="SpiRit tokenizer folder (default: the model folder)")
    g.add_argument("--flavor", choices=("base", "expressive"), default=None,
                   help="which unit streams speech output may use (default: the tokenizer's)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt string")
    src.add_argument("--prompt-file", help="a file holding the prompt string (long unit prompts)")
    g.add_argument("--modality", choices=("text", "speech", "free"), default="text", help="output modality")
    g.add_argument("--max-new-tokens", type=int, default=200, help="tokens generated")
    g.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (the release's 0.8)")
    g.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (the release's 0.95)")
    g.add_argument("--top-k", type=int, default=50, help="top-k (transformers' default, left on by the release; 0 = off)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--min-speech-units", type=int, default=24,
                   help="free mode: drop later speech segments with fewer HuBERT units (the release's rule; 0 keeps all)")
    g.add_argument("--no-markers", action="store_true", help="use the prompt exactly as given (no marker added)")
    g.add_argument("--out", help="also write the JSON here")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    g.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))

    t = sub.add_parser("table", help="tables (Markdown, CSV) and a PNG comparing results.json files",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("results", nargs="+", help="results.json files or the folders holding them")
    t.add_argument("--out", required=True, help="output folder for table.md, table.csv, table.png")
    t.add_argument("--no-reference", action="store_true", help="leave out the paper's rows")
    return p


def _data(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--data wants BENCH=DIR, got {p!r}")
        out[name] = path
    return out


def _score_megatron(args, cfg, data) -> int:
    """``score --megatron``: every rank builds its part of the model, scores its share, rank 0 writes."""
    from pathlib import Path

    import torch

    from ..checkpoint.folder import resolve
    from ..checkpoint.info import find_tokenizer
    from ..evaluation.megatron import MegatronLogits, load_megatron_model
    from ..evaluation.run import evaluate
    from ..model.config import ParallelConfig
    from ..parallel import cpu
    from ..parallel.runtime import destroy_model_parallel, init_distributed, init_model_parallel, read_env, teardown
    from ..tokenizer.tokenizer import SpiritTokenizer

    if args.dtype != "float32" and not torch.cuda.is_available():
        raise ValueError("--megatron on CPU runs fp32 only (--dtype float32)")
    pcfg = ParallelConfig(tp=args.tp, pp=args.pp)
    pcfg.data_parallel_size(read_env().world_size)  # a clear error before any process group
    ckpt = resolve(args.megatron)
    tok = SpiritTokenizer(find_tokenizer(ckpt, args.tokenizer))
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[args.dtype]
    with cpu.compat():
        ours = not torch.distributed.is_initialized()  # a caller's process group (tests, a launcher) stays up
        env = init_distributed()
        try:
            init_model_parallel(pcfg)
            chunks, rows, folder, _ = load_megatron_model(ckpt, args.tp, args.pp, dtype)
            fn = MegatronLogits(chunks, min(rows, tok.vocab.export_size))
            first = env.rank == 0
            evaluate(args.tasks, data, fn, fn.vocab_rows, tok, args.out if first else None, cfg, str(folder),
                     args.label or Path(folder).name, args.units_fingerprint,
                     "cuda" if torch.cuda.is_available() else "cpu", log=print if first else lambda *a: None)
        finally:
            if ours:
                teardown()
            else:
                destroy_model_parallel()
    if first:
        print(f"wrote {args.out}/results.json, table.md, items/*.jsonl")
    return 0


def _run(args) -> int:
    if args.cmd == "units":
        from ..evaluation.benchmarks import read_benchmark
        from ..evaluation.units import extract_bench_units, speech_fingerprint
        from ..utils.sharding import Shard
        from .units import build_extractor

        bench = read_benchmark(args.bench, args.root, args.split)
        shard, n = Shard.parse(args.shard)
        ex, batch_seconds = build_extractor(args)
        fp = speech_fingerprint({"hubert": args.hubert_model, "kmeans": args.kmeans, "pitch": args.pitch,
                                 "style": args.style},
                                {"flavor": ex.flavor, "layer": ex.km.meta.layer,
                                 "max_chunk_seconds": args.max_chunk_seconds})
        s = extract_bench_units(bench, args.out, ex, fp, shard, n, batch_seconds, args.strict, args.workers)
        state = "already done" if s["skipped"] else f"{s['written']} of {s['records']} utterances written, " \
                                                    f"{s['rejected']} rejected {s['reject_reasons']}"
        print(f"{args.bench} shard {shard}/{n}: {state} → {args.out} (speech tokenizer fingerprint {fp})")
        return 0
    if args.cmd == "score":
        from ..evaluation.hf import HFLogits, load_hf_model
        from ..evaluation.prompts import PromptConfig
        from ..evaluation.run import EvalConfig, evaluate
        from ..evaluation.scoring import PackingConfig
        from ..tokenizer.tokenizer import SpiritTokenizer

        cfg = EvalConfig(
            PromptConfig(bos=not args.no_bos, switch_marker=args.switch_marker, softmax=args.softmax,
                         normalise_text=args.normalise_text, flavor=args.flavor),
            PackingConfig(share_context=False if args.no_share_context else None, pack=args.pack,
                          row_tokens=args.row_tokens, batch_tokens=args.batch_tokens),
            args.story_speech, args.split)
        data = _data(args.data)
        if args.megatron:
            return _score_megatron(args, cfg, data)
        tok = SpiritTokenizer(args.tokenizer or args.model)
        model = load_hf_model(args.model, args.device, args.dtype)
        fn = HFLogits(model)
        evaluate(args.tasks, data, fn, fn.vocab_rows, tok, args.out, cfg, os.path.abspath(args.model), args.label,
                 args.units_fingerprint, args.device)
        print(f"wrote {args.out}/results.json, table.md, items/*.jsonl")
        return 0
    if args.cmd == "mmlu":
        from ..evaluation.hf import HFLogits, load_hf_model
        from ..evaluation.run import evaluate_mmlu_run
        from ..evaluation.scoring import PackingConfig
        from ..tokenizer.tokenizer import SpiritTokenizer

        tok = SpiritTokenizer(args.tokenizer or args.model)
        fn = HFLogits(load_hf_model(args.model, args.device, args.dtype))
        evaluate_mmlu_run(args.data, fn, fn.vocab_rows, tok, args.out, args.shots, args.split,
                          args.subjects.split(",") if args.subjects else None,
                          PackingConfig(batch_tokens=args.batch_tokens),
                          args.max_tokens, os.path.abspath(args.model), args.label, args.device)
        print(f"wrote {args.out}/results.json, table.md, items/mmlu.jsonl")
        return 0
    if args.cmd == "fewshot":
        from ..evaluation.fewshot import run_fewshot
        from ..evaluation.hf import load_hf_model
        from ..evaluation.tasks import load_bench_data
        from ..tokenizer.tokenizer import SpiritTokenizer

        want = "intents" if args.task == "ic" else "librispeech"
        bd = load_bench_data(want, args.data)
        if bd.units is None:
            raise ValueError(f"{args.data}: not a units folder: run 'spirit-eval units --bench {want}' on it first")
        tok = SpiritTokenizer(args.tokenizer or args.model)
        model = load_hf_model(args.model, args.device, args.dtype)
        run_fewshot(args.task, model, tok, bd.bench.labels, bd.units, bd.flavor, args.out, args.shots,
                    args.max_items, args.max_new_tokens, args.seed, args.device, os.path.abspath(args.model))
        print(f"wrote {args.out}/results.json, items/{args.task}.jsonl")
        return 0
    if args.cmd == "generate":
        import json

        from ..evaluation.generate import GenerateConfig, generate
        from ..evaluation.hf import load_hf_model
        from ..tokenizer.tokenizer import SpiritTokenizer
        from ..utils.atomic import write_text

        cfg = GenerateConfig(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
                             temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                             add_markers=not args.no_markers, min_speech_units=args.min_speech_units)
        tok = SpiritTokenizer(args.tokenizer or args.model, args.flavor)
        model = load_hf_model(args.model, args.device, args.dtype)
        if args.prompt_file:
            from pathlib import Path

            prompt = Path(args.prompt_file).read_text(encoding="utf-8").strip()
        else:
            prompt = args.prompt
        text = json.dumps(generate(model, tok, prompt, args.modality, cfg).to_json(), ensure_ascii=False)
        if args.out:
            write_text(args.out, text + "\n")
        print(text)
        return 0
    if args.cmd == "table":
        from ..evaluation.report import load_results, markdown, write_tables

        runs = load_results(args.results)
        write_tables(runs, args.out, not args.no_reference)
        print(markdown(runs, "normalised", not args.no_reference))
        return 0
    raise AssertionError(args.cmd)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..speech.extract import ExtractError
    from .errors import run_reporting

    return run_reporting(f"spirit-eval {args.cmd}", lambda: _run(args), (ValueError, FileNotFoundError, ExtractError))


if __name__ == "__main__":
    sys.exit(main())
