"""Evaluation during training: per-subset validation loss and benchmark accuracy of the live model (evaluators).

One short run (2 processes, PP=2, tiny model): a blend of two subsets, validation every 4 steps, swuggy:T and
tsc:T scored every 4 steps. The live accuracies must equal what ``spirit-eval score --megatron`` gives offline on
the checkpoint saved at that step.
"""
import json
import subprocess
import sys

import pytest
import yaml

from megatron_spirit.parallel.launch import run_command
from megatron_spirit.evaluation import layouts

from .launch import run_train

WORDS = [("a", "the", "thx", 1), ("b", "man", "mbn", 2), ("c", "house", "hoose", 3), ("d", "went", "wint", 4)]
STORIES = [("1", "the man went home.", "he slept.", "the sky is green."),
           ("2", "she baked bread.", "it was warm.", "dogs fly south.")]


def _build(root, name, docs, tok):
    corpus = root / f"{name}.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    r = subprocess.run([sys.executable, "-m", "megatron_spirit.cli.data", "build", "--kind", "text", "--input",
                        str(corpus), "--out", str(root / name), "--tokenizer", str(tok), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(root / name)


@pytest.fixture(scope="module")
def run(tmp_path_factory, spirit_tokenizer_dir):
    from megatron_spirit.synth.text import documents

    root = tmp_path_factory.mktemp("train-eval")
    a = _build(root, "prose", documents(300, seed=3), spirit_tokenizer_dir)
    b = _build(root, "other", [d.upper() for d in documents(300, seed=4)], spirit_tokenizer_dir)
    blend = root / "blend.json"
    r = subprocess.run([sys.executable, "-m", "megatron_spirit.cli.data", "mixture", "--text", a, "--speech", b,
                        "--shares", "1,0,1", "--steps", "8", "--seq-length", "64", "--global-batch", "4",
                        "--split", "90,10,0", "--out", str(blend)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    layouts.lexical(root / "zr", WORDS)
    layouts.cross_modal(root / "cm", STORIES)
    cfg = {
        "model": {"name": "tiny"}, "precision": "fp32", "parallel": {"pp": 2},
        "data": {"tokenizer": str(spirit_tokenizer_dir), "blend": str(blend)},
        "schedule": {"train_steps": 8, "global_batch_size": 4, "micro_batch_size": 2, "eval_interval": 4,
                     "eval_steps": 1},
        "optimizer": {"lr": 2.0e-3, "min_lr": 2.0e-3},
        "checkpoint": {"dir": str(root / "ckpt"), "save_interval": 4, "keep_last": None},
        "logging": {"dir": str(root / "logs"), "log_interval": 4, "tensorboard": False, "plot_loss": False},
        "evaluation": {"tasks": "swuggy:T,tsc:T", "interval": 4,
                       "data": [f"swuggy={root / 'zr' / 'lexical'}", f"cm-tsc={root / 'cm'}"]},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = run_train(2, [str(root / "run.yaml")], root / "job", timeout=240)
    return root, out


def test_subset_validation_and_live_accuracy(run):
    root, out = run
    recs = {r["step"]: r for r in map(json.loads, (root / "logs" / "eval.jsonl").read_text().splitlines())}
    assert sorted(recs) == [4, 8]
    for step, rec in recs.items():
        assert set(rec) == {"step", "valid/text", "valid/speech", "eval/swuggy:T", "eval/tsc:T"}, rec
        assert 0 < rec["valid/text"] < 20 and 0 < rec["valid/speech"] < 20
        assert rec["valid/text"] != rec["valid/speech"]  # two subsets, two losses
        assert f"step {step}: valid: speech {rec['valid/speech']:.4f}, text {rec['valid/text']:.4f}" in out
        assert f"step {step}: eval: swuggy:T {rec['eval/swuggy:T']:.4f}, tsc:T {rec['eval/tsc:T']:.4f}" in out
    assert all("loss" in json.loads(line) for line in (root / "logs" / "metrics.jsonl").read_text().splitlines())
    # The live scores are the offline scorer's on the checkpoint of the same step.
    offline = root / "offline"
    run_command([sys.executable, "-m", "megatron_spirit.cli.eval", "score", "--megatron",
                 str(root / "ckpt" / "iter_0000004"), "--tasks", "swuggy:T,tsc:T", "--data",
                 f"swuggy={root / 'zr' / 'lexical'}", "--data", f"cm-tsc={root / 'cm'}", "--out", str(offline)],
                world_size=1, timeout=120)
    res = json.loads((offline / "results.json").read_text())["tasks"]
    for task in ("swuggy:T", "tsc:T"):
        assert res[task]["normalised"]["accuracy"] == pytest.approx(recs[4][f"eval/{task}"], abs=1e-9)
