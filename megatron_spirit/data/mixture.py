"""The training mixture (docs/spec.md §4): blend weights from sampling shares, epochs per subset, and the blend config.

megatron-core's ``BlendedDataset`` draws each *sequence* from dataset ``i`` with probability ``weight_i``; every
sequence holds ``seq_length`` tokens (documents are packed), so a subset's share of sequences is its share of
tokens. Over ``steps`` steps of ``batch_tokens`` tokens, subset ``s`` therefore sees
``share_s × steps × batch_tokens / tokens_s`` epochs (:func:`epochs`). Inside a subset, datasets are weighted by
their token counts (each sees the same number of epochs). Interleaved corpora come as variants
(``P_v0, P_v1, …``, one per planned epoch): variant ``k`` gets the weight of ``min(1, E - k)`` epochs, so each
variant is used at most once and the planned ``E`` epochs never repeat a span layout while variants last.

The blend config (JSON, or YAML by extension) is what the trainer reads (:func:`load_blend`)::

    {"format": "megatron_spirit.blend/1", "split": "998,1,1",
     "blend": [[0.3333, "/data/speech"], [0.1111, "/data/inter_v0"], ...],      # or
     "blend_per_split": {"train": [[w, prefix], ...], "valid": [...], "test": [...]},
     "seq_length": 4096, "global_batch": 256, "steps": 100000, "subsets": {...report...}}
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..utils.atomic import write_text

FORMAT = "megatron_spirit.blend/1"
SUBSETS = ("speech", "interleaved", "text")
#: docs/spec.md §4 token counts (paper Table 2); the interleaved subset holds speech and text tokens.
PAPER_TOKENS = {"speech": 28.2e9, "interleaved": 7.0e9 + 1.4e9, "text": 307e9}
PAPER_SEQ_LENGTH, PAPER_GLOBAL_BATCH = 4096, 256


def epochs(tokens: Mapping[str, float], shares: Mapping[str, float], steps: int, batch_tokens: int) -> dict[str, float]:
    """Epochs each subset sees: ``share × steps × batch_tokens / tokens`` (shares normalised to sum 1)."""
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("shares must sum to a positive number")
    return {k: shares[k] / total * steps * batch_tokens / tokens[k] for k in tokens}


def parse_shares(text: str, names: Sequence[str]) -> dict[str, float]:
    """``"1/3,1/3,1/3"`` or ``"0.5,0.25,0.25"`` → shares by subset name (in ``names`` order)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(names):
        raise ValueError(f"--shares needs {len(names)} values ({', '.join(names)}), got {text!r}")
    out = {}
    for name, p in zip(names, parts):
        num, _, den = p.partition("/")
        value = float(num) / float(den) if den else float(num)
        if value < 0:
            raise ValueError(f"share of {name} is negative: {p}")
        out[name] = value
    return out


def dataset_tokens(prefix: str) -> int:
    """Tokens in an indexed dataset, read from its ``.idx`` only."""
    from megatron.core.datasets.indexed_dataset import _IndexReader

    if not Path(prefix + ".idx").is_file():
        raise FileNotFoundError(f"no dataset {prefix} ({prefix}.idx missing)")
    index = _IndexReader(prefix + ".idx", multimodal=False)  # keep it alive: its arrays view its mmap
    return int(np.sum(index.sequence_lengths, dtype=np.int64))


def resolve_variants(prefix: str) -> list[str]:
    """A dataset prefix as given, or its variants ``prefix_v0, prefix_v1, …`` in order."""
    if Path(prefix + ".idx").is_file():
        return [prefix]
    found = []
    for f in Path(prefix).parent.glob(Path(prefix).name + "_v*.idx"):
        m = re.fullmatch(re.escape(Path(prefix).name) + r"_v(\d+)", f.name[:-4])
        if m:
            found.append((int(m.group(1)), str(f)[:-4]))
    if not found:
        raise FileNotFoundError(f"no dataset {prefix}.idx and no variants {prefix}_v<k>.idx")
    return [p for _, p in sorted(found)]


@dataclass
class Mixture:
    """The plan: blend entries (weight, prefix) and what each subset will see."""

    blend: list[tuple[float, str]]
    report: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def plan_mixture(
    subsets: Mapping[str, Sequence[str]],
    shares: Mapping[str, float],
    steps: int,
    seq_length: int,
    global_batch: int,
    tokens_of=dataset_tokens,
) -> Mixture:
    """Weights for megatron-core's blend from ``{subset: [prefix, ...]}`` (a prefix may name variants)."""
    active = {k: v for k, v in subsets.items() if v}
    missing = [k for k in active if shares.get(k, 0) <= 0]
    if missing:
        raise ValueError(f"subsets {missing} have datasets but no positive share")
    total_share = sum(shares[k] for k in active)
    batch_tokens = seq_length * global_batch
    blend: list[tuple[float, str]] = []
    report, warnings = {}, []
    for name, prefixes in active.items():
        corpora = [resolve_variants(p) for p in prefixes]
        corpus_tokens = [tokens_of(c[0]) for c in corpora]
        sub_tokens = sum(corpus_tokens)
        if sub_tokens == 0:
            raise ValueError(f"subset {name}: its datasets hold no tokens")
        share = shares[name] / total_share
        e = share * steps * batch_tokens / sub_tokens
        used_variants = []
        for variants, t in zip(corpora, corpus_tokens):
            w = share * t / sub_tokens
            if len(variants) == 1:
                blend.append((w, variants[0]))
                used_variants.append(1)
                continue
            need = max(1, math.ceil(e - 1e-9))
            if len(variants) >= need:
                fracs = [min(1.0, e - k) for k in range(need)]
                vt = [tokens_of(v) for v in variants[:need]]
                mass = sum(f * x for f, x in zip(fracs, vt))
                blend += [(w * f * x / mass, v) for f, x, v in zip(fracs, vt, variants)]
                used_variants.append(need)
            else:
                warnings.append(f"{name}: {len(variants)} variants of {variants[0]} for {e:.2f} planned epochs; "
                                f"each variant is seen {e / len(variants):.2f} times (write --variants {need})")
                blend += [(w / len(variants), v) for v in variants]
                used_variants.append(len(variants))
        report[name] = {"share": share, "tokens": sub_tokens, "epochs": e, "datasets": len(corpora),
                        "variants_used": used_variants,  # the prefixes let the trainer validate per subset
                        "prefixes": [v for variants, n in zip(corpora, used_variants) for v in variants[:n]]}
    total = sum(w for w, _ in blend)
    return Mixture([(w / total, p) for w, p in blend], report, warnings)


def blend_config(mix: Mixture, *, split: str, steps: int, seq_length: int, global_batch: int,
                 valid: Sequence[tuple[float, str]] | None = None,
                 test: Sequence[tuple[float, str]] | None = None) -> dict:
    cfg = {"format": FORMAT, "seq_length": seq_length, "global_batch": global_batch, "steps": steps}
    entries = [[round(w, 12), p] for w, p in mix.blend]
    if valid or test:
        cfg["blend_per_split"] = {"train": entries, "valid": [list(x) for x in valid or []] or None,
                                  "test": [list(x) for x in test or []] or None}
    else:
        cfg["split"] = split
        cfg["blend"] = entries
    cfg["subsets"] = mix.report
    return cfg


def write_blend(path: str | os.PathLike, cfg: dict) -> Path:
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    else:
        write_text(path, json.dumps(cfg, indent=1) + "\n")
    return path


@dataclass(frozen=True)
class Blend:
    """A blend config as megatron-core wants it: ``(prefixes, weights)`` for all splits or per split."""

    blend: tuple[list[str], list[float]] | None = None
    split: str | None = None
    blend_per_split: tuple | None = None

    def prefixes(self) -> list[str]:
        if self.blend is not None:
            return list(self.blend[0])
        return [p for b in self.blend_per_split if b is not None for p in b[0]]


def _pairs(entries, where: str) -> tuple[list[str], list[float]]:
    try:
        weights = [float(w) for w, _ in entries]
        prefixes = [str(p) for _, p in entries]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: expected a list of [weight, prefix] pairs ({e})") from e
    if not prefixes or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{where}: needs at least one dataset and positive weights")
    return prefixes, weights


def load_blend(path_or_dict) -> Blend:
    """Read a blend config (JSON/YAML file or dict), checking its keys; errors name the file and key."""
    where = str(path_or_dict) if not isinstance(path_or_dict, Mapping) else "blend config"
    if isinstance(path_or_dict, Mapping):
        d = dict(path_or_dict)
    else:
        text = Path(path_or_dict).read_text(encoding="utf-8")
        if str(path_or_dict).endswith((".yaml", ".yml")):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    if d.get("format") != FORMAT:
        raise ValueError(f"{where}: 'format' must be {FORMAT!r}")
    if ("blend" in d) == ("blend_per_split" in d):
        raise ValueError(f"{where}: give exactly one of 'blend' (with 'split') and 'blend_per_split'")
    if "blend" in d:
        return Blend(blend=_pairs(d["blend"], f"{where} key 'blend'"), split=str(d.get("split", "998,1,1")))
    per = d["blend_per_split"]
    out = []
    for name in ("train", "valid", "test"):
        entries = per.get(name)
        out.append(_pairs(entries, f"{where} key 'blend_per_split.{name}'") if entries else None)
    return Blend(blend_per_split=tuple(out))
