"""spirit-data: pack units manifests, build Megatron indexed datasets of SpiRit sequences, merge shards, report
statistics, plan the mixture."""
from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  spirit-data build --kind text --input corpus.jsonl --tokenizer tok/ --out data/text --workers 2
  spirit-data build --kind speech --input units.jsonl --tokenizer tok/ --out data/speech
  spirit-data build --kind interleaved --input units.jsonl --alignments words.ctm --variants 4 \\
      --tokenizer tok/ --out data/inter            # writes data/inter_v0 … data/inter_v3
  spirit-data pack --input units.jsonl --alignments words.ctm --out units.spiritpack   # parse JSON once ...
  spirit-data build --kind speech --input units.spiritpack --tokenizer tok/ --out data/speech  # ... build fast
  spirit-data build ... --shard 3/16               # writes data/text-shard00003of00016 (Slurm arrays)
  spirit-data merge data/text                      # merges data/text-shard*of* into data/text
  spirit-data stats data/text data/inter_v0 --tokenizer tok/ --out stats.json --plot stats.png
  spirit-data mixture --speech data/speech --interleaved data/inter --text data/text \\
      --shares 1/3,1/3,1/3 --steps 100000 --out blend.json
"""


def _pair(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from e
    return lo, hi


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spirit-data",
        description="Turn text corpora, units manifests and word alignments into megatron-core indexed datasets "
        "(.bin/.idx) of SpiRit-LM sequences, and plan the training mixture (docs/spec.md §3-4).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    b = sub.add_parser("build", formatter_class=fmt, help="build a dataset (one kind) from JSONL inputs",
                       description="Build one dataset: read JSONL, make sequences, write .bin/.idx through "
                       "megatron-core's IndexedDatasetBuilder (one document per sequence), atomically. Bad records "
                       "go to <out>.rejects.jsonl with a reason; counts go to <out>.summary.json. A finished output "
                       "is skipped on a re-run with the same arguments and refused with others; a build that "
                       "writes nothing or rejects more than --max-reject-fraction fails (exit code 2).")
    b.add_argument("--kind", required=True, choices=["text", "speech", "interleaved", "asr", "tts"],
                   help="text: <s>[Text]…</s>; speech: <s>[Speech][Hu…]…</s>; interleaved: word-level spans "
                   "(needs alignments); asr: [Speech]…[Text]…; tts: [Text]…[Speech]…")
    b.add_argument("--input", required=True, nargs="+",
                   help="JSONL file(s): text records or a units manifest; or packs of units manifests "
                   "(spirit-data pack: the same records, several times faster to build from)")
    b.add_argument("--out", required=True, help="output prefix (writes PREFIX.bin/.idx/.summary.json)")
    b.add_argument("--tokenizer", required=True, help="SpiRit tokenizer folder (spirit-make-tokenizer)")
    b.add_argument("--flavor", choices=["base", "expressive"], default=None,
                   help="unit streams to use (default: the tokenizer's flavor); base = HuBERT only")
    b.add_argument("--json-key", default="text", help="text field of --kind text records")
    b.add_argument("--alignments", default=None,
                   help="word alignments for --kind interleaved: a CTM file, JSON/JSONL word lists, or a folder of "
                   "<id>.TextGrid (MFA) / <id>.json; records may also carry 'words' inline")
    b.add_argument("--variants", type=int, default=1,
                   help="interleaved: write N independently seeded variants PREFIX_v0..v{N-1} (one per epoch)")
    b.add_argument("--seed", type=int, default=1234, help="interleaving seed")
    b.add_argument("--text-span", type=_pair, default=(10, 30), metavar="MIN,MAX", help="text span words")
    b.add_argument("--speech-span", type=_pair, default=(5, 15), metavar="MIN,MAX", help="speech span words")
    b.add_argument("--workers", type=int, default=1, help="worker processes (output order is kept)")
    b.add_argument("--shard", default=None, metavar="I/N",
                   help="build only shard I of N (0-based; a byte range of the inputs); output PREFIX-shardIofN")
    b.add_argument("--strict", action="store_true", help="stop with an error at the first bad record")
    b.add_argument("--overwrite", action="store_true",
                   help="rebuild even if the output is complete (a finished output is reused only when --kind, "
                   "--input (size, mtime), --tokenizer, --flavor, --json-key, --alignments, --variants, --seed, "
                   "spans and --shard match; else the build stops and names what changed)")
    b.add_argument("--max-reject-fraction", type=float, default=0.5,
                   help="fail (nothing written) when more than this share of records is rejected, or none is "
                   "written")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--chunk-kb", type=int, default=1024,
                   help="input per work unit: KiB of JSONL (packs: 512 HuBERT runs per KiB)")

    k = sub.add_parser("pack", formatter_class=fmt, help="parse units manifests once into a columnar pack",
                       description="Parse units manifests (JSONL) with their word alignments and transcripts into "
                       "a pack: a folder of memory-mapped columns that `build` reads without any JSON, for every "
                       "kind but text. Records that are no usable record at all go to PACK/rejects.jsonl and are "
                       "reported by each build; alignment or transcript problems are kept and reported by the "
                       "builds that need them. Written atomically; a finished pack is skipped on re-run.")
    k.add_argument("--input", required=True, nargs="+", help="units manifest JSONL file(s)")
    k.add_argument("--out", required=True, help="pack folder to write (NAME.spiritpack)")
    k.add_argument("--alignments", default=None,
                   help="word alignments for records without inline 'words': CTM, JSON/JSONL, or a folder of "
                   "<id>.TextGrid / <id>.json")
    k.add_argument("--workers", type=int, default=1, help="parsing processes (the pack is the same)")
    k.add_argument("--overwrite", action="store_true", help="rewrite even if the pack is complete")
    k.add_argument("--no-progress", action="store_true", help="no progress bar")

    m = sub.add_parser("merge", formatter_class=fmt, help="merge shard datasets (megatron-core add_index)",
                       description="Merge finished datasets into OUT. Without --inputs, merges OUT-shard*of* (and "
                       "OUT_vK-shard*of* into OUT_vK), refusing if a shard is missing or unfinished.")
    m.add_argument("out", help="output prefix")
    m.add_argument("--inputs", nargs="+", default=None, help="explicit prefixes to concatenate, in order")
    m.add_argument("--overwrite", action="store_true")

    s = sub.add_parser("stats", formatter_class=fmt, help="tokens per modality, spans, switches: JSON + PNG")
    s.add_argument("prefixes", nargs="+", help="dataset prefixes")
    s.add_argument("--tokenizer", required=True, help="the tokenizer the datasets were built with")
    s.add_argument("--out", default="stats.json", help="JSON output")
    s.add_argument("--plot", default=None, help="PNG output (default: the JSON path with .png)")

    x = sub.add_parser("mixture", formatter_class=fmt, help="blend weights, epochs per subset, blend config",
                       description="Weights for megatron-core's blend so each subset gets its share of sequences "
                       "over the planned steps; prints epochs per subset and writes the blend config the trainer "
                       "reads. Interleaved prefixes may name variants (PREFIX_v0, PREFIX_v1, …), used one per epoch.")
    x.add_argument("--speech", nargs="*", default=[], help="speech-only dataset prefixes")
    x.add_argument("--interleaved", nargs="*", default=[], help="interleaved prefixes (or variant bases)")
    x.add_argument("--text", nargs="*", default=[], help="text-only dataset prefixes")
    x.add_argument("--shares", default="1/3,1/3,1/3", help="sampling shares speech,interleaved,text")
    x.add_argument("--steps", "--epochs-for", type=int, default=100_000, dest="steps", help="planned steps")
    x.add_argument("--seq-length", type=int, default=4096)
    x.add_argument("--global-batch", type=int, default=256, help="sequences per step (256 × 4096 = 1M tokens)")
    x.add_argument("--split", default="998,1,1", help="train,valid,test split of every dataset")
    x.add_argument("--out", default=None, help="blend config to write (.json, or .yaml)")
    x.add_argument("--paper", action="store_true",
                   help="print the epochs the docs/spec.md §4 token counts give (paper Table 2) and exit")
    return p


def _build(args) -> int:
    from ..data.interleave import SpanConfig
    from ..data.build import build_dataset
    from ..data.sequences import SequenceConfig
    from ..utils.sharding import parse_shard

    cfg = SequenceConfig(args.kind, args.json_key, SpanConfig(*args.text_span, *args.speech_span),
                         args.variants, args.seed)
    from ..data.pack import is_pack

    packed = any(is_pack(p) for p in args.input)
    if args.kind == "interleaved" and args.alignments is None and not packed:
        print("spirit-data: note: no --alignments; records must carry 'words' inline", file=sys.stderr)
    if args.kind != "text" and not packed:
        print("spirit-data: note: building from JSONL; a pack (spirit-data pack) parses the manifest once and "
              "builds several times faster", file=sys.stderr)
    s = build_dataset(args.input, args.out, args.tokenizer, cfg, flavor=args.flavor, alignments=args.alignments,
                      workers=args.workers, shard=parse_shard(args.shard), strict=args.strict,
                      overwrite=args.overwrite, progress=not args.no_progress,
                      chunk_bytes=args.chunk_kb * 1024, max_reject_fraction=args.max_reject_fraction)
    if s.skipped:
        print(f"{args.out}: already complete, skipped (--overwrite to rebuild)")
        return 0
    print(f"wrote {', '.join(s.prefixes)}: {s.documents} documents, {s.tokens} tokens "
          f"({s.text_tokens} text, {s.speech_tokens} speech), {s.rejected} rejected"
          f"{' ' + str(s.rejects_by_reason) if s.rejected else ''} (see {s.rejects_file}), "
          f"{s.tokens_per_s / 1e6:.2f}M tokens/s")
    return 0


def _pack(args) -> int:
    from ..data.pack import is_pack, pack_manifests

    if is_pack(args.out) and not args.overwrite:
        print(f"{args.out}: already complete, skipped (--overwrite to rewrite)")
        return 0
    m = pack_manifests(args.input, args.out, args.alignments, workers=args.workers, progress=not args.no_progress)
    print(f"wrote {args.out}: {m['records']} records ({m['aligned']} with a usable alignment), streams "
          f"{', '.join(m['streams'])}, {m['lexicon']} distinct words, {m['rejected']} rejected "
          f"(see {args.out}/rejects.jsonl), {m['elapsed_s']:.1f} s")
    return 0


def _merge(args) -> int:
    from ..data.merge import find_shards, merge_datasets

    groups = {args.out: args.inputs} if args.inputs else find_shards(args.out)
    for out, inputs in groups.items():
        s = merge_datasets(out, inputs, overwrite=args.overwrite)
        for w in s.warnings:
            print(f"spirit-data: warning: {w}", file=sys.stderr)
        state = "already complete" if s.skipped else f"merged {len(inputs)} datasets"
        print(f"{out}: {state}: {s.documents} documents, {s.tokens} tokens")
    return 0


def _stats(args) -> int:
    from pathlib import Path

    from ..data.stats import write_stats

    png = args.plot or str(Path(args.out).with_suffix(".png"))
    for s in write_stats(args.prefixes, args.tokenizer, args.out, png):
        hours = "?" if s["speech_hours"] is None else f"{s['speech_hours']:.2f}"
        print(f"{s['prefix']}: {s['documents']} documents, {s['tokens']} tokens, text {s['tokens_by_modality']['text']}"
              f", speech {s['speech_tokens']}, speech hours {hours}, "
              f"switches/doc {s['mean_switches_per_document']:.2f}")
    print(f"wrote {args.out} and {png}")
    return 0


def _mixture(args) -> int:
    from ..data.mixture import PAPER_TOKENS, SUBSETS, blend_config, epochs, parse_shares, plan_mixture, write_blend

    shares = parse_shares(args.shares, SUBSETS)
    batch_tokens = args.seq_length * args.global_batch
    if args.paper:
        e = epochs(PAPER_TOKENS, shares, args.steps, batch_tokens)
        for k in SUBSETS:
            print(f"{k:12s} {PAPER_TOKENS[k] / 1e9:7.1f}B tokens  share {shares[k] / sum(shares.values()):.3f}  "
                  f"epochs at {args.steps} steps × {batch_tokens} tokens: {e[k]:.2f}")
        return 0
    subsets = {"speech": args.speech, "interleaved": args.interleaved, "text": args.text}
    if not any(subsets.values()):
        raise ValueError("give at least one of --speech, --interleaved, --text (or --paper)")
    from ..data.check import check_datasets
    from ..data.mixture import resolve_variants

    _, notes = check_datasets([v for p in sum(subsets.values(), []) for v in resolve_variants(p)])
    for w in notes:
        print(f"spirit-data: warning: {w}", file=sys.stderr)
    mix = plan_mixture(subsets, shares, args.steps, args.seq_length, args.global_batch)
    for w in mix.warnings:
        print(f"spirit-data: warning: {w}", file=sys.stderr)
    for name, r in mix.report.items():
        print(f"{name:12s} {r['tokens']:>14d} tokens  share {r['share']:.3f}  epochs {r['epochs']:.2f}")
    for w, prefix in mix.blend:
        print(f"  {w:.6f} {prefix}")
    if args.out:
        cfg = blend_config(mix, split=args.split, steps=args.steps, seq_length=args.seq_length,
                           global_batch=args.global_batch)
        print(f"wrote {write_blend(args.out, cfg)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..data.sink import DiskFullError
    from ..data.summary import DataBuildError
    from .errors import run_reporting

    commands = {"build": _build, "pack": _pack, "merge": _merge, "stats": _stats, "mixture": _mixture}
    return run_reporting(f"spirit-data {args.command}", lambda: commands[args.command](args),
                         (ValueError, FileNotFoundError, DataBuildError, DiskFullError))


if __name__ == "__main__":
    sys.exit(main())
