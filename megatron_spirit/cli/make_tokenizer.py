"""spirit-make-tokenizer: extend a LLaMA-2 sentencepiece model with the SpiRit-LM speech vocabulary."""
from __future__ import annotations

import argparse
import sys

from ..tokenizer.vocab import FLAVORS, SpiritVocab, new_tokens


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spirit-make-tokenizer",
        description=(
            "Append [Text], [Speech], [Hu0..500] (and for EXPRESSIVE [Pi0..63], [St0..99]) to a LLaMA-2-style "
            "sentencepiece model as user-defined pieces (base ids unchanged; new ids = base size + docs/spec.md §1 "
            "offsets), then filler pieces [Madeuptoken<id>] up to the exported size, and write a folder that both "
            "megatron_spirit and transformers.AutoTokenizer load. The base may already be a SpiRit tokenizer (a "
            "released SpiRit-LM's or an export's) whose pieces sit at SPEC's ids: every id is kept."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--base-model", required=True, help="LLaMA-2 tokenizer.model, or a folder holding one")
    p.add_argument(
        "--flavor",
        choices=FLAVORS,
        default="base",
        help="base: HuBERT units only (32512 ids for LLaMA-2); expressive: also pitch and style (32768). "
        "An id means the same piece in both.",
    )
    p.add_argument("--out", required=True, help="output folder (written atomically; replaced if it exists)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..tokenizer.build import build_tokenizer
    from ..tokenizer.tokenizer import SpiritTokenizer

    try:
        out = build_tokenizer(args.base_model, args.out, args.flavor)
    except (ValueError, FileNotFoundError) as e:
        print(f"spirit-make-tokenizer: error: {e}", file=sys.stderr)
        return 2
    tok = SpiritTokenizer(out)
    v: SpiritVocab = tok.vocab
    spirit = len(new_tokens(v.flavor))
    print(
        f"wrote {out}: {v.base_size} base + {spirit} SpiRit pieces + {v.full_size - v.base_size - spirit} fillers "
        f"= {v.full_size}; "
        f"[Text]={v.text_id} [Speech]={v.speech_id} [Hu0]={v.stream_offset(v.streams[0])}; "
        f"flavor {v.flavor}, exported vocab size {v.export_size}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
