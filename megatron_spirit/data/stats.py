"""What a built dataset holds: tokens per modality, documents, speech hours, span lengths, switches per document.

Read straight from the ``.bin``/``.idx`` (memory-mapped, in blocks of whole documents, vectorised), so it checks
what training will actually see. Span lengths are in tokens (a span = the tokens after a ``[Text]``/``[Speech]``
marker up to the next marker or the document's end); the build summary adds span lengths in words and speech
hours (units are deduplicated, so hours cannot be recovered from the tokens).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..tokenizer.tokenizer import SpiritTokenizer
from ..tokenizer.vocab import STREAMS
from ..utils.atomic import atomic_path, write_text
from .sink import summary_path

#: Span-length histogram: bin edges in tokens (log-spaced, last bin open).
SPAN_EDGES = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 1 << 62])
BLOCK_TOKENS = 1 << 25


def dataset_stats(prefix: str, tok: SpiritTokenizer) -> dict:
    from megatron.core.datasets.indexed_dataset import _IndexReader

    index = _IndexReader(prefix + ".idx", multimodal=False)
    lengths = np.array(index.sequence_lengths, dtype=np.int64)  # a copy: the index unmaps on deletion
    data = np.memmap(prefix + ".bin", dtype=index.dtype, mode="r")
    v = tok.vocab
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    if bounds[-1] != len(data):
        raise ValueError(f"{prefix}: .idx describes {bounds[-1]} tokens but .bin holds {len(data)}")
    counts = {"text": 0, "bos_eos": 0, "text_marker": 0, "speech_marker": 0, **{s.name: 0 for s in STREAMS}}
    span_hist = {"text": np.zeros(len(SPAN_EDGES) - 1, np.int64), "speech": np.zeros(len(SPAN_EDGES) - 1, np.int64)}
    switches = np.zeros(0, dtype=np.int64)
    d0 = 0
    while d0 < len(lengths):  # blocks of whole documents
        d1 = int(np.searchsorted(bounds, bounds[d0] + BLOCK_TOKENS, side="right")) - 1
        d1 = max(d1, d0 + 1)
        block = np.asarray(data[bounds[d0] : bounds[d1]], dtype=np.int64)
        special = (block == tok.bos_id) | (block == tok.eos_id)
        counts["bos_eos"] += int(special.sum())
        counts["text"] += int(np.count_nonzero(block < v.base_size)) - int(special.sum())
        counts["text_marker"] += int(np.count_nonzero(block == v.text_id))
        counts["speech_marker"] += int(np.count_nonzero(block == v.speech_id))
        for s in STREAMS:
            lo = v.stream_offset(s)
            counts[s.name] += int(np.count_nonzero((block >= lo) & (block < lo + s.count)))
        # Spans: from each marker to the next marker or the document's last token.
        local = bounds[d0 : d1 + 1] - bounds[d0]
        markers = np.flatnonzero((block == v.text_id) | (block == v.speech_id))
        stops = np.union1d(markers, local[1:] - 1)
        nxt = stops[np.searchsorted(stops, markers, side="right")]
        span_len = nxt - markers - 1
        is_text = block[markers] == v.text_id
        for name, sel in (("text", is_text), ("speech", ~is_text)):
            span_hist[name] += np.histogram(span_len[sel], bins=SPAN_EDGES)[0]
        doc_of_marker = np.searchsorted(local[1:], markers, side="right")
        per_doc = np.bincount(doc_of_marker, minlength=d1 - d0)
        switches = np.concatenate([switches, np.maximum(per_doc - 1, 0)])
        d0 = d1
    summary_file = summary_path(prefix)
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    seconds = summary.get("speech_seconds")
    return {
        "prefix": prefix,
        "documents": int(len(lengths)),
        "tokens": int(bounds[-1]),
        "tokens_by_modality": counts,
        "speech_tokens": int(sum(counts[s.name] for s in STREAMS)),
        "speech_hours": None if seconds is None else seconds / 3600.0,
        "span_tokens_hist": {"edges": SPAN_EDGES[:-1].tolist(), **{k: h.tolist() for k, h in span_hist.items()}},
        "span_words_hist": summary.get("span_words_hist"),
        "switches_per_document_hist": np.bincount(switches).tolist() if len(switches) else [],
        "mean_switches_per_document": float(switches.mean()) if len(switches) else 0.0,
    }


def plot_stats(stats: Sequence[dict], png: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = [Path(s["prefix"]).name for s in stats]
    keys = ["text", "hubert", "pitch", "style"]
    bottom = np.zeros(len(stats))
    for k in keys:
        vals = np.array([s["tokens_by_modality"][k] for s in stats], dtype=float)
        axes[0].bar(names, vals, bottom=bottom, label=k)
        bottom += vals
    axes[0].set_title("tokens by modality")
    axes[0].legend()
    edges = stats[0]["span_tokens_hist"]["edges"]
    for s in stats:
        for mod, style in (("text", "-"), ("speech", "--")):
            h = s["span_tokens_hist"][mod]
            if sum(h):
                axes[1].plot(edges, h, style, marker="o", label=f"{Path(s['prefix']).name} {mod}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_title("span length (tokens, bin lower edge)")
    axes[1].legend(fontsize=7)
    for s in stats:
        h = s["switches_per_document_hist"]
        if h:
            axes[2].bar(np.arange(len(h)), h, alpha=0.5, label=Path(s["prefix"]).name)
    axes[2].set_title("modality switches per document")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def write_stats(prefixes: Sequence[str], tokenizer_dir: str, out_json: str, png: str | None = None) -> list[dict]:
    tok = SpiritTokenizer(tokenizer_dir)
    stats = [dataset_stats(p, tok) for p in prefixes]
    write_text(out_json, json.dumps(stats, indent=1) + "\n")
    if png:
        plot_stats(stats, png)
    return stats
