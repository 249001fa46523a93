"""Results tables in the paper's layout: Table 4's columns (token-normalised) and Table 10's (summed), with the
paper's SpiRit-LM 7B rows (docs/spec.md §5) for reference; CSV and a PNG comparing runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..utils.atomic import write_text

#: Table 4's column order: (task, header).
COLUMNS = (("swuggy:T", "WUGGY T"), ("swuggy:S", "WUGGY S"), ("sblimp:T", "BLIMP T"), ("sblimp:S", "BLIMP S"),
           ("tsc:T", "tSC T"), ("tsc:S", "tSC S"), ("tsc:T2S", "tSC T→S"), ("tsc:S2T", "tSC S→T"),
           ("sc:T", "SC T"), ("sc:S", "SC S"), ("sc:T2S", "SC T→S"), ("sc:S2T", "SC S→T"), ("mmlu", "MMLU"))
_T4 = ("80.3 69.0 73.3 58.3 98.0 82.9 72.7 88.6 79.4 61.0 59.5 64.6 36.9",
       "75.8 65.0 73.6 54.2 97.9 75.4 61.6 73.2 78.9 56.9 54.6 58.8 33.3")
#: Paper reference rows, in accuracy percent, per metric (Table 10's summed figures: only the one the contract
#: quotes, BASE text WUGGY 95.1).
REFERENCE = {
    "normalised": {f"SpiRit-LM {m} 7B (paper)": dict(zip((c for c, _ in COLUMNS), map(float, row.split())))
                   for m, row in zip(("BASE", "EXPRESSIVE"), _T4)},
    "summed": {"SpiRit-LM BASE 7B (paper)": {"swuggy:T": 95.1}},
}


def load_results(paths: Sequence[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        p = Path(p)
        p = p / "results.json" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no results.json")
        out.append(json.loads(p.read_text()))
    return out


def _row(results: dict, metric: str) -> dict[str, float]:
    row = {}
    for name, r in results["tasks"].items():
        acc = r.get(metric, {}).get("accuracy") if metric in r else r.get("accuracy")
        if acc is not None:
            row[name] = 100.0 * acc
    return row


def rows(runs: Sequence[dict], metric: str, reference: bool = True) -> list[tuple[str, dict[str, float]]]:
    out = [(r.get("label") or Path(r["model"]).name, _row(r, metric)) for r in runs]
    if reference:
        out += list(REFERENCE[metric].items())
    return out


def _columns(table) -> list[tuple[str, str]]:
    present = {k for _, row in table for k in row}
    return [(k, h) for k, h in COLUMNS if k in present]


def markdown(runs: Sequence[dict], metric: str = "normalised", reference: bool = True) -> str:
    table = rows(runs, metric, reference)
    cols = _columns(table)
    title = ("Accuracy (%), hypothesis log-probability divided by its token count (Table 4)" if metric == "normalised"
             else "Accuracy (%), summed hypothesis log-probability (Table 10)")
    lines = [f"**{title}**", "", "| model | " + " | ".join(h for _, h in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for label, row in table:
        lines.append(f"| {label} | " + " | ".join(f"{row[k]:.1f}" if k in row else "–" for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def csv_text(runs: Sequence[dict], reference: bool = True) -> str:
    out = ["model,metric," + ",".join(k for k, _ in COLUMNS)]
    for metric in ("normalised", "summed"):
        for label, row in rows(runs, metric, reference):
            out.append(f"{label},{metric}," + ",".join(f"{row[k]:.2f}" if k in row else "" for k, _ in COLUMNS))
    return "\n".join(out) + "\n"


def plot(runs: Sequence[dict], path: str | Path, metric: str = "normalised", reference: bool = True) -> Path:
    """Grouped bars: one group per task column, one bar per run (and reference row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows(runs, metric, reference)
    cols = _columns(table)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols)), 4))
    width = 0.8 / max(1, len(table))
    for i, (label, row) in enumerate(table):
        xs = [j + i * width for j, (k, _) in enumerate(cols) if k in row]
        ax.bar(xs, [row[k] for k, _ in cols if k in row], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], [h for _, h in cols], rotation=30, ha="right")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_ylabel(f"accuracy % ({metric})")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_tables(runs: Sequence[dict], out_dir: str | Path, reference: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"table.md": out / "table.md", "table.csv": out / "table.csv", "table.png": out / "table.png"}
    write_text(paths["table.md"], markdown(runs, "normalised", reference) + "\n" + markdown(runs, "summed", reference))
    write_text(paths["table.csv"], csv_text(runs, reference))
    plot(runs, paths["table.png"], "normalised", reference)
    return paths
