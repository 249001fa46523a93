"""spirit-data end to end: build, merge, stats; the Slurm script's submissions and the commands its stages run."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_spirit.cli.data import main as cli

from .corpus import make_corpus, write_jsonl

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "slurm" / "build_datasets.sbatch"


def test_build_stats_and_errors(tmp_path, tok_dir, capsys):
    recs = make_corpus(30, seed=21)
    manifest = write_jsonl(tmp_path / "u.jsonl", recs)
    out = tmp_path / "d" / "inter"
    assert cli(["build", "--kind", "interleaved", "--input", manifest, "--tokenizer", tok_dir, "--out", str(out),
                "--variants", "2", "--text-span", "3,5", "--speech-span", "2,3", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli(["build", "--kind", "interleaved", "--input", manifest, "--tokenizer", tok_dir, "--out", str(out),
                "--variants", "2", "--text-span", "3,5", "--speech-span", "2,3", "--no-progress"]) == 0
    assert "already complete, skipped" in capsys.readouterr().out
    assert cli(["build", "--kind", "interleaved", "--input", manifest, "--tokenizer", tok_dir, "--out", str(out),
                "--variants", "2", "--no-progress"]) == 2  # other spans: refused, not "skipped"
    assert "--text-span/--speech-span (was" in capsys.readouterr().err
    assert cli(["build", "--kind", "speech", "--input", manifest, "--tokenizer", tok_dir,
                "--out", str(tmp_path / "d" / "speech"), "--flavor", "base", "--no-progress"]) == 0
    stats_json = tmp_path / "stats.json"
    assert cli(["stats", f"{out}_v0", str(tmp_path / "d" / "speech"), "--tokenizer", tok_dir,
                "--out", str(stats_json)]) == 0
    st = json.loads(stats_json.read_text())
    summary = json.loads(Path(f"{out}_v0.summary.json").read_text())
    inter, speech = st
    assert inter["documents"] == summary["documents"] == 30 and inter["tokens"] == summary["tokens"]
    assert inter["tokens_by_modality"]["text"] == summary["text_tokens"]
    assert inter["speech_tokens"] == summary["speech_tokens"]
    assert inter["speech_hours"] == pytest.approx(summary["speech_seconds"] / 3600)
    n_markers = inter["tokens_by_modality"]["text_marker"] + inter["tokens_by_modality"]["speech_marker"]
    assert sum(inter["span_tokens_hist"]["text"]) + sum(inter["span_tokens_hist"]["speech"]) == n_markers
    assert inter["mean_switches_per_document"] == pytest.approx((n_markers - 30) / 30)
    assert speech["mean_switches_per_document"] == 0 and speech["tokens_by_modality"]["pitch"] == 0
    assert speech["tokens_by_modality"]["hubert"] == speech["speech_tokens"] > 0
    assert stats_json.with_suffix(".png").stat().st_size > 1000
    # Errors: exit code 2 and a message naming the problem.
    assert cli(["build", "--kind", "text", "--input", str(tmp_path / "nope.jsonl"), "--tokenizer", tok_dir,
                "--out", str(tmp_path / "x")]) == 2
    assert "nope.jsonl not found" in capsys.readouterr().err
    assert cli(["build", "--kind", "text", "--input", manifest, "--tokenizer", tok_dir, "--out", str(tmp_path / "x"),
                "--variants", "2"]) == 2
    assert cli(["build", "--kind", "text", "--input", manifest, "--tokenizer", tok_dir, "--out", str(tmp_path / "x"),
                "--shard", "3/3"]) == 2
    assert "--shard must be i/n" in capsys.readouterr().err
    assert cli(["merge", str(tmp_path / "none")]) == 2


def test_tool_script_help():
    r = subprocess.run([sys.executable, str(REPO / "tools/preprocess/build_dataset.py"), "build", "--help"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0 and "--variants" in r.stdout and "--shard" in r.stdout


def test_sbatch_syntax():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)


def test_sbatch_submits_array_and_dependent_merge_and_its_stages_build(tmp_path, tok_dir):
    """A stand-in `sbatch` records the submissions; the stages' spirit-data commands (recorded by a stand-in
    SPIRIT_DATA) are then run for real, in this process, and must give a merged dataset."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "sbatch.log"
    (bindir / "sbatch").write_text(f'#!/bin/bash\necho "$@" >> {log}\necho $((100 + $(wc -l < {log})))\n')
    calls = tmp_path / "calls.log"
    (bindir / "record").write_text(f'#!/bin/bash\nprintf "%q " "$@" >> {calls}\necho >> {calls}\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": f"Document number {i} is here."} for i in range(40)])
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", KIND="text", INPUT=text, TOKENIZER=tok_dir,
               OUT=str(tmp_path / "out" / "text"), SHARDS="3", SPIRIT_DATA="record")
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "STAGE"):
        env.pop(k, None)
    r = subprocess.run(["bash", str(SBATCH), "--partition=debug", "--mem=1G"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    subs = log.read_text().splitlines()
    assert len(subs) == 2
    assert "--array=0-2" in subs[0] and "STAGE=build" in subs[0] and "--partition=debug --mem=1G" in subs[0]
    assert "--dependency=afterok:101" in subs[1] and "STAGE=merge" in subs[1] and subs[1].endswith(str(SBATCH))
    # The stages, as Slurm would run them.
    for task in range(3):
        stage_env = dict(env, SLURM_JOB_ID="101", SLURM_ARRAY_TASK_ID=str(task), STAGE="build",
                         SLURM_CPUS_PER_TASK="1")
        subprocess.run(["bash", str(SBATCH)], env=stage_env, check=True, timeout=60)
    subprocess.run(["bash", str(SBATCH)], env=dict(env, SLURM_JOB_ID="102", STAGE="merge"), check=True, timeout=60)
    commands = [shlex.split(line) for line in calls.read_text().splitlines()]
    assert [c[0] for c in commands] == ["build"] * 3 + ["merge"]
    assert commands[1][commands[1].index("--shard") + 1] == "1/3"
    for argv in commands:
        assert cli(argv) == 0
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    merged = IndexedDataset(str(tmp_path / "out" / "text"))
    assert len(merged) == 40
