"""slurm/extract_units.sbatch: valid bash, names its resources, runs one array task's shard."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "extract_units.sbatch"


def test_syntax_and_resources():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    lines = [line for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    opts = {re.match(r"#SBATCH --([\w-]+)", line).group(1) for line in lines}
    assert {"array", "gres", "cpus-per-task", "mem", "time", "requeue", "signal", "output"} <= opts
    assert "#SBATCH --gres=gpu:1" in lines


def test_runs_an_array_task_outside_slurm(trained_units, tiny_hubert_dir, espeak_corpus, tmp_path):
    """Array task 5 of tasks 4-5 is shard 1/2; the flavor follows the optional pitch/style arguments."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "2",
           "SPIRIT_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "EXTRA_ARGS": "--device cpu"}
    q = trained_units
    r = subprocess.run(["bash", str(SCRIPT), str(espeak_corpus), str(tmp_path / "u"), str(tiny_hubert_dir),
                        str(q / "km"), str(q / "pitch"), str(q / "style")], env=env, capture_output=True, text=True,
                       cwd=SCRIPT.parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "shard 1/2" in r.stdout
    summary = json.loads((tmp_path / "u" / "summary-00001-of-00002.json").read_text())
    assert summary["written"] == 4 and summary["flavor"] == "expressive"
    bad = subprocess.run(["bash", str(SCRIPT), "only-one-arg"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
