"""What every stage script shares: its command line, the GPU facts from the env stage, and writing its result."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stage_main(run, doc: str) -> None:
    """``python stage_X.py --result R.json [--work DIR] [--env ENV.json] [--dry-run]``: ``run(args)`` → R.json."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--result", required=True, help="where the stage's JSON result goes")
    ap.add_argument("--work", default=None, help="scratch folder (default: beside --result)")
    ap.add_argument("--env", default=None, help="the env stage's result (measured peak, GPU memory)")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes, fp32, CPU")
    ap.add_argument("--layers", type=int, default=None, help="layers of the 7B-shaped slice")
    args = ap.parse_args()
    args.work = Path(args.work or Path(args.result).parent)
    args.work.mkdir(parents=True, exist_ok=True)
    result = run(args)
    tmp = Path(args.result).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp, args.result)
    print(json.dumps(_short(result), default=str))
    sys.stdout.flush()


def _short(value):
    """The result without its per-step lists, for the log."""
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items() if not isinstance(v, (list, tuple)) or len(v) <= 4}
    return value


def gpu_facts(args) -> tuple[float, float]:
    """(GPU memory GiB, measured peak TFLOP/s) from the env stage; the H200's nominal figures without it."""
    if args.env and Path(args.env).is_file():
        env = json.loads(Path(args.env).read_text())
        memory = (env.get("gpu") or {}).get("memory_gib") or 80.0
        return float(memory), float(env.get("peak_tflops") or 989.0)
    return 139.0 if not args.dry_run else 80.0, 989.0
