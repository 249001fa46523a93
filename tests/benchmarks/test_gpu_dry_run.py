"""The GPU check's CPU dry run (``benchmarks/gpu/run.sh OUT --dry-run``): the same stages with tiny shapes in
fp32 on CPU, so the script cannot rot between the rare GPU windows. About 35 s on the 2-core dev machine."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["env", "train", "hf", "units", "eval", "tests"]


def test_dry_run_reports_every_stage(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), str(out), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=300)
    results = json.loads((out / "results.json").read_text())
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:], json.dumps(results["stages"], indent=1)[-4000:])
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.json", "tests.xml"]  # at most 8 come back
    assert results["dry_run"] is True and "install" not in results
    assert list(results["stages"]) == STAGES
    for name in STAGES:
        assert results["stages"][name]["status"] == "ok", (name, results["stages"][name])
        assert f"===== {name} (ok" in (out / "log.txt").read_text()
    s = results["summary"]
    assert s["peak_tflops"] > 0
    assert s["megatron"]["layer_spec"] == "local+sdpa" and s["megatron"]["tokens_per_s"] > 0
    assert s["megatron"]["peak_memory_gib"] > 0 and 0 < s["megatron"]["mfu"]
    assert {"autocast", "bf16"} <= set(s["hf"]) and all(v["tokens_per_s"] > 0 for v in s["hf"].values())
    assert s["ratio_vs_hf_best"] > 0
    assert s["planner"]["step_seconds"] > 0 and s["planner"]["calibrated_efficiency"] > 0
    assert s["units"]["batched_realtime"] > 0 and s["units"]["units_same_fraction"] > 0.9
    for shape in ("swuggy", "storycloze"):
        ev = s["eval"][shape]
        assert ev["naive_items_per_s"] > 0 and all(ev[k]["items_per_s"] > 0 for k in ("fast", "shared-1", "packed"))
        assert ev["fast"]["max_abs_diff"] < 1e-4 and ev["fast"]["flop_ratio"] > 0
    assert set(s["targets"]) == {"mfu", "planner_step_time", "vs_transformers", "units_realtime"}
    # Without CUDA every GPU test is collected and skipped: none may error at import or collection.
    tests = results["stages"]["tests"]["result"]
    assert tests["failed"] == 0 and tests["passed"] == 0 and tests["skipped"] >= 5, tests
    assert all("needs CUDA" in (c["message"] or "") for c in tests["cases"].values())
    train = results["stages"]["train"]["result"]
    assert len(train["losses"]) == train["workload"]["warmup_steps"] + train["workload"]["timed_steps"]
