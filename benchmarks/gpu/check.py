"""The GPU check's stage runner: each stage in its own process under its own time budget, one results.json.

    python benchmarks/gpu/check.py --out OUT_DIR --work SCRATCH [--dry-run] [--install-report FILE]

(``run.sh`` calls this after installing the carried wheels.) Stages, in this order so that a hang late in the
test suite cannot cost the throughput figures: env (versions, GPU, measured bf16 peak), train (the 7B-shaped
slice through spirit-train), hf (the transformers baseline), units (HuBERT batched vs one by one), eval (the
likelihood scorer's items/s beside the naive loop), tests
(``pytest -m gpu tests/gpu``). A stage that fails or runs out of time is recorded with its error and the next
one runs. ``results.json`` is rewritten after every stage; OUT_DIR also gets ``log.txt`` (each stage's output,
trimmed) and ``tests.xml`` (JUnit) — three files.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Seconds per stage (limits, not estimates); all together stay inside --deadline.
BUDGETS = {"env": 40, "train": 120, "hf": 100, "units": 45, "eval": 60, "tests": 240}
TARGETS = {"mfu": 0.45, "hf_ratio": 1.3, "planner_error": 0.20, "units_realtime": 1000.0}
LOG_LINES = 150  # per stage, in log.txt


def _run_stage(name: str, cmd: list[str], budget: float, log, env: dict) -> dict:
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=budget)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stage and whatever it started (trainer ranks, managers)
        output, _ = proc.communicate()
        status = "timeout"
    lines = (output or "").splitlines()
    log.write(f"\n===== {name} ({status}, {time.time() - t0:.1f} s of {budget:.0f}) $ {' '.join(cmd)}\n")
    if len(lines) > LOG_LINES:
        log.write(f"[... {len(lines) - LOG_LINES} earlier lines]\n")
    log.write("\n".join(lines[-LOG_LINES:]) + "\n")
    log.flush()
    info = {"status": status, "seconds": round(time.time() - t0, 1), "budget_s": budget,
            "returncode": proc.returncode}
    if status != "ok":
        info["error"] = "\n".join(lines[-40:])[-4000:] or f"exit code {proc.returncode}, no output"
    return info


def junit_summary(path: Path) -> dict:
    root = ET.parse(path).getroot()
    cases = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = "skipped" if kind == "skipped" else "failed"
                message = ((node.get("message") or "") + "\n" + (node.text or "")).strip()[-1500:]
                break
        cases[name] = {"outcome": outcome, "seconds": float(case.get("time") or 0), "message": message}
    counts = {k: sum(c["outcome"] == k for c in cases.values()) for k in ("passed", "failed", "skipped")}
    return {**counts, "cases": cases}


def summarise(stages: dict, dry_run: bool) -> dict:
    r = {k: v.get("result") or {} for k, v in stages.items()}
    env, train, hf, units, ev, tests = (r.get(k, {}) for k in ("env", "train", "hf", "units", "eval", "tests"))
    s = {"dry_run": dry_run, "gpu": (env.get("gpu") or {}).get("name"), "peak_tflops": env.get("peak_tflops")}
    if train:
        s["megatron"] = {k: train.get(k) for k in ("layer_spec", "tokens_per_s", "tflops", "mfu", "peak_memory_gib",
                                                    "step_seconds")}
        s["planner"] = train.get("planner")
    if hf:
        s["hf"] = {name: {k: v.get(k) for k in ("tokens_per_s", "tflops", "mfu", "peak_memory_gib", "error")}
                   for name, v in hf.get("variants", {}).items()}
    if units:
        s["units"] = {"batched_realtime": units["batched"]["audio_s_per_s"],
                      "one_by_one_realtime": units["one_by_one"]["audio_s_per_s"], "speedup": units["speedup"],
                      "units_same_fraction": units["units_same_fraction"]}
    if ev:
        s["eval"] = {shape: {"naive_items_per_s": v["naive_items_per_s"],
                             **{k: {"items_per_s": v[k]["items_per_s"], "speedup": v[k]["speedup"],
                                    "flop_ratio": v[k]["flop_ratio"], "max_abs_diff": v[k]["max_abs_diff"]}
                                for k in ("fast", "shared-1", "packed")}}
                     for shape, v in ev["shapes"].items()}
    if tests:
        s["tests"] = {k: tests.get(k) for k in ("passed", "failed", "skipped")}
    targets = {}
    if train:
        targets["mfu"] = {"value": train["mfu"], "target": f">= {TARGETS['mfu']}", "met": train["mfu"] >= TARGETS["mfu"],
                          "layer_spec": train.get("layer_spec")}
        err = train["planner"]["step_error"]
        targets["planner_step_time"] = {"value": err, "target": f"within ±{TARGETS['planner_error']:.0%}",
                                        "met": abs(err) <= TARGETS["planner_error"],
                                        "calibrated_efficiency": train["planner"]["calibrated_efficiency"]}
    if train and hf.get("tokens_per_s"):
        ratio = train["tokens_per_s"] / hf["tokens_per_s"]
        s["ratio_vs_hf_best"] = ratio
        targets["vs_transformers"] = {"value": ratio, "target": f">= {TARGETS['hf_ratio']}x the faster HF variant "
                                      f"({hf.get('best_variant')})", "met": ratio >= TARGETS["hf_ratio"]}
    if units:
        v = units["batched"]["audio_s_per_s"]
        targets["units_realtime"] = {"value": v, "target": f">= {TARGETS['units_realtime']:g}x real time batched",
                                     "met": v >= TARGETS["units_realtime"]}
    s["targets"] = targets
    if dry_run:
        s["note"] = "dry run: tiny shapes in fp32 on CPU; no figure here says anything about a GPU"
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results.json, log.txt and tests.xml go here")
    ap.add_argument("--work", required=True, help="scratch folder (checkpoints, datasets, models)")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes, fp32/gloo on CPU; same stages")
    ap.add_argument("--install-report", help="install.py's JSON report, copied into results.json")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("SPIRIT_GPU_DEADLINE", 500)),
                    help="seconds for all stages together")
    ap.add_argument("--stages", default=",".join(BUDGETS), help="comma-separated subset of " + ",".join(BUDGETS))
    ap.add_argument("--layers", type=int, default=None, help="layers of the 7B-shaped slice (default: workload.py)")
    args = ap.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = {"schema": 1, "dry_run": args.dry_run, "started": datetime.now(timezone.utc).isoformat(),
               "python": sys.executable, "argv": sys.argv[1:], "stages": {}}
    if args.install_report and Path(args.install_report).is_file():
        results["install"] = json.loads(Path(args.install_report).read_text())
    env = dict(os.environ, PYTHONUNBUFFERED="1", SPIRIT_GPU_FIGURES=str(work / "figures.jsonl"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path, even on a GPU machine
    flags = ["--dry-run"] if args.dry_run else []
    flags += ["--layers", str(args.layers)] if args.layers else []
    chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(BUDGETS))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}: expected some of {','.join(BUDGETS)}")
    with open(out / "log.txt", "a") as log:
        log.write(f"GPU check {results['started']} dry_run={args.dry_run} stages={chosen}\n")
        for name in chosen:
            left = args.deadline - (time.time() - t0)
            if left < 10:
                results["stages"][name] = {"status": "skipped", "error": f"no time left ({left:.0f} s)"}
                continue
            budget = min(BUDGETS[name], left)
            result_file = work / f"{name}.json"
            if name == "tests":
                junit = out / "tests.xml"
                cmd = [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                       f"--junitxml={junit}", f"--timeout={int(max(30, min(150, budget - 20)))}",
                       "-o", "junit_family=xunit1"]  # per test: a hung test fails alone, its runs reaped
            else:
                cmd = [sys.executable, str(HERE / f"stage_{name}.py"), "--result", str(result_file),
                       "--work", str(work), "--env", str(work / "env.json"), *flags]
            info = _run_stage(name, cmd, budget, log, env)
            try:
                if name == "tests":
                    info["result"] = junit_summary(junit)
                    figures = work / "figures.jsonl"
                    if figures.is_file():
                        info["result"]["figures"] = [json.loads(x) for x in figures.read_text().splitlines() if x]
                    if info["status"] == "failed" and info["result"]["failed"]:
                        info["status"] = "ok, with failing tests"  # pytest ran; the failures are in the result
                elif result_file.is_file():
                    info["result"] = json.loads(result_file.read_text())
            except (OSError, ValueError, ET.ParseError) as e:
                info.setdefault("error", f"could not read the stage's result: {e}")
            results["stages"][name] = info
            try:
                results["summary"] = summarise(results["stages"], args.dry_run)
            except (KeyError, TypeError, ZeroDivisionError) as e:  # a malformed stage result must not stop the run
                results["summary"] = {"error": f"{type(e).__name__}: {e}"}
            results["seconds"] = round(time.time() - t0, 1)
            tmp = out / "results.json.tmp"
            tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
            os.replace(tmp, out / "results.json")
            print(f"[{name}] {info['status']} in {info['seconds']} s", flush=True)
        summary = json.dumps(results.get("summary", {}), indent=1, default=str)
        log.write(f"\n===== summary ({results.get('seconds')} s)\n{summary}\n")
    print(summary)
    bad = [n for n, i in results["stages"].items() if i["status"] != "ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
