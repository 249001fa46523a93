"""spirit-units: train the speech quantizers and extract HuBERT / pitch / style units from a corpus."""
from __future__ import annotations

import argparse
import json
import os
import sys

_FMT = argparse.ArgumentDefaultsHelpFormatter


def _common_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="audio manifest (JSONL: id, path[, speaker, text, alignment])")
    p.add_argument("--out", required=True, help="output folder (written atomically; replaced if it exists)")
    p.add_argument("--max-hours", type=float, default=10.0, help="hours of audio sampled from the manifest")
    p.add_argument("--seed", type=int, default=0, help="sampling and k-means seed")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, …")


def add_extractor_args(e: argparse.ArgumentParser) -> None:
    """The speech tokenizer's arguments (HuBERT, quantizers, flavor, batching): shared with spirit-eval units."""
    e.add_argument("--hubert-model", required=True, help="local HubertModel folder")
    e.add_argument("--kmeans", "--quantizer", dest="kmeans", required=True,
                   help="HuBERT quantizer: our k-means folder, a .npy of centroids, a TWIST/textlesslib "
                   "joblib/pickle sklearn KMeans file, or the release's linear quantizer checkpoint "
                   "(L11_quantizer_500.pt: 500 units + a CTC blank filled from the left)")
    e.add_argument("--layer", type=int, default=None,
                   help="HuBERT layer (default: the k-means metadata's, 11 for files without metadata)")
    e.add_argument("--pitch", help="pitch quantizer folder (from train-pitch); needed for expressive")
    e.add_argument("--style", help="style k-means folder (from train-style); needed for expressive")
    e.add_argument("--flavor", choices=("base", "expressive"), default="base",
                   help="base: HuBERT units; expressive: also pitch and style")
    e.add_argument("--shard", default="0/1", help="i/n: this task's share of the manifest (e.g. a Slurm array)")
    e.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per model batch (default: 200 on GPU; 0 = one file at a time on "
                   "CPU, where padded batches were measured slower: benchmarks/bench_units_hubert.py)")
    e.add_argument("--max-chunk-seconds", type=float, default=100.0, help="longest piece given to HuBERT")
    e.add_argument("--workers", type=int, default=2, help="audio reading threads")
    e.add_argument("--device", default="auto", help="auto (cuda when present; bf16 there), cpu, cuda, …")
    e.add_argument("--strict", action="store_true", help="a bad record is an error instead of a reject")


def build_extractor(args):
    """The UnitExtractor those arguments describe, and the batch size in seconds to run it with."""
    from ..speech.extract import UnitExtractor
    from ..speech.kmeans import KMeansQuantizer
    from ..speech.linear_quantizer import load_hubert_quantizer
    from ..speech.pitch import PitchQuantizer

    km = load_hubert_quantizer(args.kmeans, args.layer)
    pitch = PitchQuantizer.load(args.pitch) if args.pitch else None
    style = KMeansQuantizer.load(args.style) if args.style else None
    ex = UnitExtractor(args.hubert_model, km, pitch, style, args.flavor, args.device, args.max_chunk_seconds)
    batch_seconds = args.batch_seconds
    if batch_seconds is None:
        batch_seconds = 200.0 if ex.featurizer.device.type == "cuda" else 0.0
    return ex, batch_seconds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spirit-units",
        description="Speech units for SpiRit-LM (docs/spec.md §2): HuBERT k-means units at 25 Hz, pitch VQ-VAE units "
        "at 12.5 Hz and style units at 1 Hz. Train the quantizers on a sample of a corpus, then extract a units "
        "manifest shard by shard. Audio is read with soundfile, averaged to mono and resampled to 16 kHz.",
        formatter_class=_FMT,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    h = sub.add_parser("train-hubert-kmeans", formatter_class=_FMT,
                       help="HuBERT features of a corpus sample → faiss k-means (500 units)",
                       description="Features of one layer of a local Hugging Face HubertModel folder over a "
                       "sample of the corpus, then faiss k-means. Saves centroids.npy + kmeans.json (model, layer, "
                       "rate) in --out.")
    _common_sample(h)
    h.add_argument("--model", required=True, help="local HubertModel folder (e.g. mHuBERT-25Hz converted to HF)")
    h.add_argument("--layer", type=int, default=11, help="transformer layer (1-based; 11 for mHuBERT-25Hz)")
    h.add_argument("--k", type=int, default=500, help="clusters")
    h.add_argument("--max-frames", type=int, default=1_000_000, help="frames kept (random subset) for k-means")
    h.add_argument("--niter", type=int, default=50, help="k-means iterations")
    h.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per model batch (default: 200 on GPU, one file at a time on CPU)")
    h.add_argument("--from-file", help="no training: import a public quantizer (TWIST/textlesslib joblib or pickle "
                   "sklearn KMeans, or a .npy of centroids) into --out with this model/layer's metadata; "
                   "--manifest is then not read")

    s = sub.add_parser("train-style", formatter_class=_FMT,
                       help="encoder features pooled over 1 s windows → k-means (100 units)",
                       description="Mean-pooled features of a HubertModel-compatible encoder over windows of "
                       "--window seconds, then faiss k-means with --k units.")
    _common_sample(s)
    s.add_argument("--model", required=True, help="local HubertModel-compatible encoder folder")
    s.add_argument("--layer", type=int, default=6, help="encoder layer pooled for style")
    s.add_argument("--k", type=int, default=100, help="style units")
    s.add_argument("--window", type=float, default=1.0, help="pooling window in seconds (1 Hz units)")
    s.add_argument("--niter", type=int, default=50, help="k-means iterations")
    s.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per model batch (default: 200 on GPU, one file at a time on CPU)")

    t = sub.add_parser("train-pitch", formatter_class=_FMT,
                       help="F0 (pYAAPT or fast ACF) → VQ-VAE with a 64-code EMA codebook at 12.5 Hz",
                       description="F0 every 80 samples at 16 kHz, 2 channels (interpolated log-F0, voiced flag), "
                       "normalised, then a VQ-VAE (4 stride-2 levels: 200 Hz → 12.5 Hz). Saves pitch_vqvae.pt + "
                       "config.json (with held-out reconstruction error) in --out.")
    _common_sample(t)
    t.add_argument("--method", choices=("yaapt", "acf"), default="yaapt",
                   help="F0 extractor: pYAAPT (paper; slow) or a vectorised autocorrelation tracker (fast)")
    t.add_argument("--norm", choices=("none", "utterance", "speaker"), default="utterance",
                   help="log-F0 normalisation (speaker: statistics per manifest 'speaker' field)")
    t.add_argument("--heldout", type=int, default=10, help="files held out for the reconstruction report")
    t.add_argument("--steps", type=int, default=2000, help="training steps")
    t.add_argument("--batch-size", type=int, default=32, help="segments per step")
    t.add_argument("--segment", type=int, default=256, help="segment length in F0 frames (multiple of 16)")
    t.add_argument("--channels", type=int, default=128, help="conv channels")
    t.add_argument("--code-dim", type=int, default=32, help="codebook vector size")
    t.add_argument("--codes", type=int, default=64, help="codebook size (the vocabulary holds 64)")
    t.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    t.add_argument("--f0-min", type=float, default=50.0, help="lowest F0 searched (Hz)")
    t.add_argument("--f0-max", type=float, default=500.0, help="highest F0 searched (Hz)")

    e = sub.add_parser("extract", formatter_class=_FMT,
                       help="audio manifest → units manifest (one shard; resumable)",
                       description="Writes units-I-of-N.jsonl (records: id, duration, units per stream with rate "
                       "and start frames, input fields passed through), rejects-I-of-N.jsonl (id, path, reason) and "
                       "summary-I-of-N.json into --out. A shard whose summary exists is skipped.")
    e.add_argument("--manifest", required=True, help="audio manifest (JSONL: id, path, optional fields)")
    e.add_argument("--out", required=True, help="output folder for the shard files")
    add_extractor_args(e)
    e.add_argument("--f0-workers", type=int, default=0,
                   help="processes for the F0 tracker (expressive): pYAAPT runs at ~5x real time per core and holds "
                   "the GIL, so on GPU nodes give it the node's spare CPUs; 0 runs it in the reading threads")
    e.add_argument("--pack", action="store_true",
                   help="also write units-I-of-N.spiritpack (spirit-data pack of the shard, with its inline word "
                   "alignments): what spirit-data build reads fastest")
    e.add_argument("--align", metavar="CTC_MODEL", default=None,
                   help="also align the transcripts ('text') with this CTC model folder in the same pass over the "
                   "audio: words-I-of-N.ctm/.jsonl + align-rejects/align-summary in --out (see `align`); with "
                   "--pack the pack takes these alignments")
    e.add_argument("--min-score", type=float, default=None, help="with --align: see `align --min-score`")
    e.add_argument("--align-lang", default=None, help="with --align: see `align --lang`")

    a = sub.add_parser("align", formatter_class=_FMT,
                       help="CTC forced alignment: audio + transcripts → word CTM/JSONL (one shard; resumable)",
                       description="Aligns each record's 'text' (normalised as aligned text, docs/spec.md §3: "
                       "lower case, no punctuation) to its audio with a local CTC model (a Hugging Face Wav2Vec2ForCTC-style "
                       "folder: wav2vec2-960h, MMS with --lang). Characters the model lacks align to a <star> "
                       "token. Writes words-I-of-N.ctm and .jsonl (what spirit-data pack/build --alignments read), "
                       "optionally textgrid-I-of-N/<id>.TextGrid, align-rejects-I-of-N.jsonl (id, path, reason) and "
                       "align-summary-I-of-N.json (last) into --out. A shard whose summary exists is skipped.")
    a.add_argument("--manifest", required=True, help="audio manifest (JSONL: id, path, text)")
    a.add_argument("--model", required=True, help="local CTC model folder (config.json, weights, vocab.json)")
    a.add_argument("--out", required=True, help="output folder for the shard files")
    a.add_argument("--shard", default="0/1", help="i/n: this task's share of the manifest (same slices as extract)")
    a.add_argument("--lang", default=None, help="language of a multilingual (MMS) vocabulary and adapter")
    a.add_argument("--min-score", type=float, default=None,
                   help="reject utterances whose alignment score (mean log-probability per frame of the forced "
                   "path, <= 0; transcripts that do not match their audio score low) is below this; choose it from "
                   "the scores in words-*.jsonl of a first shard")
    a.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per batch (default: 200 on GPU, 0 = one file at a time on CPU)")
    a.add_argument("--window-seconds", type=float, default=30.0,
                   help="audio the model sees at once; longer files are aligned in windows of this length")
    a.add_argument("--context-seconds", type=float, default=2.0, help="extra audio each window sees on both sides")
    a.add_argument("--max-trellis-gb", type=float, default=2.0,
                   help="alignment memory per batch (frames x states bytes); a longer utterance is rejected")
    a.add_argument("--textgrid", action="store_true", help="also write one Praat TextGrid per utterance")
    a.add_argument("--workers", type=int, default=2, help="audio reading threads")
    a.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, …")

    r = sub.add_parser("import-release", formatter_class=_FMT,
                       help="the release speech tokenizer's units (dict or string form) → a units manifest",
                       description="Reads JSONL records with an 'id' and either the release tokenizer's units dict "
                       "(encode_units: 'hubert', 'pitch', 'style' as space-separated frame-level units, 'audio') or "
                       "its unit string ('string': [St7][Pi15][Hu1]...), other fields passed through, and writes "
                       "a units manifest (what extract writes: HuBERT 25 Hz, pitch 12.5 Hz, style 1 Hz, runs with "
                       "start frames) for spirit-data pack/build. A string has no durations: its units get the "
                       "earliest frames that keep its token order (\"timing\": \"order\"), and it may not carry an "
                       "alignment.")
    r.add_argument("--input", required=True, nargs="+", help="JSONL files of release-format records")
    r.add_argument("--out", required=True, help="units manifest to write (JSONL; written atomically)")

    c = sub.add_parser("synth-corpus", formatter_class=_FMT,
                       help="speak generated sentences with espeak-ng: wavs + manifest with word alignments",
                       description="A small synthetic corpus for demos and tests: --sentences sentences from "
                       "the seeded generator, spoken by a few espeak-ng voices, with word times from the "
                       "synthesiser's phoneme events. Writes --out/wav/*.wav and --out/manifest.jsonl.")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--sentences", type=int, default=40, help="number of sentences")
    c.add_argument("--seed", type=int, default=0, help="sentence generator seed")
    return p


def _run(args) -> int:
    if args.cmd == "train-hubert-kmeans" and args.from_file:
        from ..speech.quantizer_training import import_kmeans

        q = import_kmeans(args.from_file, args.model, args.out, args.layer)
        print(f"wrote {args.out}: imported {q.k} centroids of dim {q.dim} from {args.from_file} "
              f"(layer {q.meta.layer}, {q.meta.rate:g} Hz)")
    elif args.cmd == "train-hubert-kmeans":
        from ..speech.quantizer_training import train_hubert_kmeans

        q, sample = train_hubert_kmeans(args.manifest, args.model, args.out, args.layer, args.k, args.max_hours,
                                        args.max_frames, args.niter, args.seed, args.device, args.batch_seconds)
        print(f"wrote {args.out}: k={q.k} dim={q.dim} layer {q.meta.layer} at {q.meta.rate:g} Hz from "
              f"{q.meta.train_frames} frames of {len(sample.wavs)} files ({sample.hours:.3f} h); "
              f"{sample.skipped} files skipped{f' (e.g. {sample.example_error})' if sample.skipped else ''}")
    elif args.cmd == "train-style":
        from ..speech.quantizer_training import train_style

        q, sample = train_style(args.manifest, args.model, args.out, args.layer, args.k, args.window,
                                args.max_hours, args.niter, args.seed, args.device, args.batch_seconds)
        print(f"wrote {args.out}: {q.k} style units from {q.meta.train_frames} windows of {args.window:g} s "
              f"({len(sample.wavs)} files, {sample.hours:.3f} h); {sample.skipped} files skipped")
    elif args.cmd == "train-pitch":
        from ..speech.pitch import PitchConfig
        from ..speech.quantizer_training import train_pitch

        cfg = PitchConfig(method=args.method, norm=args.norm, steps=args.steps, batch_size=args.batch_size,
                          segment=args.segment, channels=args.channels, code_dim=args.code_dim, codes=args.codes,
                          lr=args.lr, f0_min=args.f0_min, f0_max=args.f0_max, seed=args.seed)
        device = "cuda" if args.device == "auto" and _cuda() else ("cpu" if args.device == "auto" else args.device)
        q, sample = train_pitch(args.manifest, args.out, cfg, args.max_hours, args.heldout, args.seed, device)
        print(f"wrote {args.out}: {cfg.codes} pitch codes at {q.rate:g} Hz from {len(sample.wavs)} files "
              f"({sample.hours:.3f} h); held-out reconstruction {json.dumps(q.metrics)}")
    elif args.cmd == "extract":
        from ..speech.extract import extract_shard
        from ..utils.sharding import Shard

        shard, n = Shard.parse(args.shard)
        ex, batch_seconds = build_extractor(args)
        aligner = _extract_aligner(args, shard, n)
        s = extract_shard(args.manifest, args.out, ex, shard, n, batch_seconds, args.strict, args.workers,
                          f0_workers=args.f0_workers, on_batch=None if aligner is None else aligner.add)
        if aligner is not None:
            from ..align.corpus import AlignPaths, align_shard

            if s["skipped"]:  # units were done before: the alignments need their own pass over the audio
                a = align_shard(args.manifest, args.out, aligner.model, shard, n, batch_seconds, args.min_score,
                                workers=args.workers, progress=False)
            else:
                a = aligner.finish(AlignPaths.of(args.out, shard, n), shard=shard, num_shards=n)
            _print_align(a, shard, n, args.out)
        if s["skipped"]:
            print(f"shard {shard}/{n} already done ({s['written']} records): skipped")
        else:
            print(f"shard {shard}/{n}: {s['written']} of {s['records']} records written, {s['rejected']} rejected "
                  f"{s['reject_reasons']}; {s['audio_hours']:.4f} audio-h in {s['seconds']:.1f} s "
                  f"({s['audio_hours_per_second']:.5f} audio-h/s) → {args.out}")
        if args.pack:  # after the summary: a re-run of a finished shard still writes a missing pack
            from ..data.pack import SUFFIX, is_pack, pack_manifests
            from ..speech.extract import ShardPaths

            units = ShardPaths.of(args.out, shard, n).units
            target = units.with_suffix(SUFFIX)
            if not is_pack(target):
                words = None
                if args.align:
                    from ..align.corpus import AlignPaths

                    words = str(AlignPaths.of(args.out, shard, n).ctm)
                m = pack_manifests([str(units)], str(target), words, progress=False)
                print(f"packed {target}: {m['records']} records, {m['aligned']} with a usable alignment")
    elif args.cmd == "align":
        from ..align.corpus import align_shard
        from ..align.model import CtcModel
        from ..utils.sharding import Shard

        shard, n = Shard.parse(args.shard)
        model = CtcModel(args.model, args.device, args.lang, args.window_seconds, args.context_seconds)
        batch_seconds = args.batch_seconds
        if batch_seconds is None:
            batch_seconds = 200.0 if model.device.type == "cuda" else 0.0
        a = align_shard(args.manifest, args.out, model, shard, n, batch_seconds, args.min_score, args.textgrid,
                        args.workers, max_trellis_bytes=int(args.max_trellis_gb * 2**30))
        _print_align(a, shard, n, args.out)
    elif args.cmd == "import-release":
        from ..speech.release_units import import_release_units

        s = import_release_units(args.input, args.out)
        print(f"wrote {s.out}: {s.records} records ({s.from_dict} from units dicts, {s.from_string} from unit "
              "strings)")
    elif args.cmd == "synth-corpus":
        from ..synth.espeak import write_corpus
        from ..synth.text import sentences

        path = write_corpus(sentences(args.sentences, args.seed), args.out)
        print(f"wrote {path} ({args.sentences} utterances)")
    return 0


def _extract_aligner(args, shard: int, n: int):
    """The alignment pass riding on extract's audio (None without --align or when the shard is aligned)."""
    if not args.align:
        return None
    from ..align.corpus import AlignPaths, ShardAligner, shard_items
    from ..align.model import CtcModel

    if AlignPaths.of(args.out, shard, n).summary.is_file():
        return None
    return ShardAligner(CtcModel(args.align, args.device, args.align_lang), shard_items(args.manifest, shard, n),
                        args.min_score)


def _print_align(a: dict, shard: int, n: int, out: str) -> None:
    if a["skipped"]:
        print(f"align shard {shard}/{n} already done ({a['aligned']} aligned): skipped")
    else:
        score = "n/a" if a["mean_score"] is None else f"{a['mean_score']:.3f}"
        print(f"align shard {shard}/{n}: {a['aligned']} of {a['records']} records aligned (mean score {score}), "
              f"{a['rejected']} rejected {a['reject_reasons']}; {a['audio_hours']:.4f} audio-h in "
              f"{a['seconds']:.1f} s → {out}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..speech.extract import ExtractError
    from .errors import run_reporting

    return run_reporting(f"spirit-units {args.cmd}", lambda: _run(args), (ValueError, FileNotFoundError, ExtractError))


if __name__ == "__main__":
    sys.exit(main())
