#!/usr/bin/env python
"""The whole system at toy scale on CPU, with the real code paths; every artefact lands under --out.

Each stage writes its own folder and a ``.done`` marker last, so a re-run resumes where it stopped.
Stages are added here as the system grows; each prints what it made and where.
"""
from __future__ import annotations

import argparse
import json
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
    from megatron_spirit.tokenizer.train import train_sentencepiece

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


STAGES = [text_corpus, tokenizer]


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
