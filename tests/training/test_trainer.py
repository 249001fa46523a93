"""spirit-train end to end on CPU: real rank processes, gloo, a tiny model, a dataset built by spirit-data.

One uninterrupted TP=2 run is the reference; interrupted, resumed, re-laid-out and crashed runs are compared
with it step by step (losses from each run's metrics.jsonl).
"""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from .launch import Job, losses, run_train

STEPS = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory, spirit_tokenizer_dir):
    """A text dataset from spirit-data and a tiny-model config."""
    from megatron_spirit.synth.text import documents

    root = tmp_path_factory.mktemp("train")
    corpus = root / "text.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(600, seed=3)))
    r = subprocess.run([sys.executable, "-m", "megatron_spirit.cli.data", "build", "--kind", "text", "--input",
                        str(corpus), "--out", str(root / "text"), "--tokenizer", str(spirit_tokenizer_dir),
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = {
        "model": {"name": "tiny"},
        "precision": "fp32",
        "data": {"tokenizer": str(spirit_tokenizer_dir), "prefixes": [str(root / "text")], "split": "98,2,0"},
        "schedule": {"train_steps": STEPS, "global_batch_size": 8, "micro_batch_size": 2},
        "optimizer": {"lr": 2.0e-3, "min_lr": 2.0e-3},
        "checkpoint": {"save_interval": 8},
        "logging": {"log_interval": 1, "tensorboard": False},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


def _args(cfg, run_dir, *extra):
    return [str(cfg), f"checkpoint.dir={run_dir}/ckpt", f"logging.dir={run_dir}/logs", *extra]


@pytest.fixture(scope="module")
def reference(setup):
    """TP=2, 16 steps uninterrupted, checkpoints at 8 and 16."""
    root, cfg = setup
    run = root / "ref"
    out = run_train(2, _args(cfg, run, "parallel.tp=2"), run)
    assert "layer spec local+sdpa" in out and "starting from random initialisation" in out
    return run, losses(run / "logs" / "metrics.jsonl")


def test_tp2_loss_falls(reference):
    run, ref = reference
    assert sorted(ref) == list(range(1, STEPS + 1))
    assert ref[STEPS] < ref[1] - 1.0, ref  # the tiny model learns the synthetic text
    assert (run / "logs" / "loss_curve.png").is_file()
    assert (run / "ckpt" / "latest").read_text().strip() == f"iter_{STEPS:07d}"


def test_sigterm_saves_and_resume_is_bit_identical(setup, reference):
    root, cfg = setup
    _, ref = reference
    run = root / "sigterm"
    job = Job(2, _args(cfg, run, "parallel.tp=2", "checkpoint.save_interval=0"), run)
    metrics = run / "logs" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    job.signal(signal.SIGTERM)
    assert job.wait(240) == [3, 3], job.output(0)[-3000:]
    k = int((run / "ckpt" / "latest").read_text().strip().split("_")[1])
    assert 3 <= k < STEPS
    assert "exiting with 3 so the job is requeued" in job.output(0)
    out = run_train(2, _args(cfg, run, "parallel.tp=2"), run / "again")
    assert f"resumed from {run}/ckpt/iter_{k:07d} at step {k}" in out
    got = losses(metrics)
    for step in range(k + 1, STEPS + 1):
        assert got[step] == ref[step], (step, got[step], ref[step])  # bit-identical


def test_ctrl_c_saves_and_exits_130_without_requeue(setup):
    root, cfg = setup
    run = root / "sigint"
    job = Job(2, _args(cfg, run, "parallel.tp=2", "checkpoint.save_interval=0"), run)
    metrics = run / "logs" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    job.signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to every process of the job
    assert job.wait(240) == [130, 130], job.output(0)[-3000:]
    k = int((run / "ckpt" / "latest").read_text().strip().split("_")[1])
    assert 2 <= k < STEPS
    assert "exiting with 130 (interrupted: not requeued)" in job.output(0)
    assert "KeyboardInterrupt" not in job.output(0) + job.output(1)


def test_resume_at_another_layout(setup, reference):
    root, cfg = setup
    ref_run, ref = reference
    run = root / "pp2"
    (run / "ckpt").mkdir(parents=True)
    shutil.copytree(ref_run / "ckpt" / "iter_0000008", run / "ckpt" / "iter_0000008")
    out = run_train(2, _args(cfg, run, "parallel.pp=2"), run)
    assert "resumed from" in out and "saved layout {'tp': 2, 'pp': 1, 'dp': 1}" in out
    got = losses(run / "logs" / "metrics.jsonl")
    assert sorted(got) == list(range(9, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(ref[step], abs=1e-5), step


def test_resume_into_and_out_of_virtual_pipeline_stages(setup):
    """A TP=2 checkpoint resumes at PP=2 with two virtual stages per rank (chunks model0/model1), and that run's
    checkpoint resumes back at TP=2: both continue the uninterrupted run's losses."""
    root, cfg = setup
    four = ["model.num_layers=4", "checkpoint.save_interval=4"]
    base = root / "vpp_ref"
    run_train(2, _args(cfg, base, "parallel.tp=2", "schedule.train_steps=12", *four), base)
    ref = losses(base / "logs" / "metrics.jsonl")
    vpp = root / "vpp"
    (vpp / "ckpt").mkdir(parents=True)
    shutil.copytree(base / "ckpt" / "iter_0000004", vpp / "ckpt" / "iter_0000004")
    out = run_train(2, _args(cfg, vpp, "parallel.pp=2", "parallel.vpp=2", "schedule.train_steps=8", *four), vpp)
    assert "pp=2 vpp=2" in out and "saved layout {'tp': 2, 'pp': 1, 'dp': 1}" in out
    back = root / "vpp_back"
    (back / "ckpt").mkdir(parents=True)
    shutil.copytree(vpp / "ckpt" / "iter_0000008", back / "ckpt" / "iter_0000008")
    run_train(2, _args(cfg, back, "parallel.tp=2", "schedule.train_steps=12", *four), back)
    got = losses(vpp / "logs" / "metrics.jsonl") | losses(back / "logs" / "metrics.jsonl")
    assert sorted(got) == list(range(5, 13))
    for step in got:
        assert got[step] == pytest.approx(ref[step], abs=1e-5), (step, got[step], ref[step])


OVERLAP = ["parallel.overlap_grad_reduce=true", "parallel.overlap_param_gather=true"]
DISTOPT = ["parallel.distributed_optimizer=true", "schedule.train_steps=12"]


@pytest.fixture(scope="module")
def distopt(setup):
    """12 steps with the distributed optimizer (grad reduce and param gather overlapped), checkpoint at 6."""
    root, cfg = setup
    base = root / "distopt"
    run_train(2, _args(cfg, base, *DISTOPT, "checkpoint.save_interval=6", *OVERLAP), base)
    return base, losses(base / "logs" / "metrics.jsonl")


@pytest.mark.xdist_group("trainer-distopt")
@pytest.mark.parametrize("name, layout", [("same", OVERLAP), ("pp2", ["parallel.pp=2"])], ids=["same", "pp2"])
def test_distributed_optimizer_resumes(setup, distopt, name, layout):
    """Resumed from step 6: bit-identical at the same layout, within 1e-5 at PP2."""
    root, cfg = setup
    base, ref = distopt
    run = root / f"distopt_{name}"
    (run / "ckpt").mkdir(parents=True)
    shutil.copytree(base / "ckpt" / "iter_0000006", run / "ckpt" / "iter_0000006")
    run_train(2, _args(cfg, run, *DISTOPT, *layout), run)
    got = losses(run / "logs" / "metrics.jsonl")
    assert sorted(got) == list(range(7, 13))
    for step in got:
        if name == "same":
            assert got[step] == ref[step], (step, got[step], ref[step])
        else:
            assert got[step] == pytest.approx(ref[step], abs=1e-5), step


@pytest.mark.xdist_group("trainer-distopt")
def test_switching_optimizer_kind_is_refused(setup, distopt):
    root, cfg = setup
    base, _ = distopt
    run = root / "distopt_switch"
    shutil.copytree(base / "ckpt", run / "ckpt")
    out = run_train(2, _args(cfg, run, "parallel.tp=2"), run, expect=1)
    assert "saved with parallel.distributed_optimizer=True" in out


def test_kill9_during_save_keeps_previous_checkpoint_and_leaves_no_process(setup):
    root, cfg = setup
    run = root / "kill9"
    job = Job(2, _args(cfg, run, "parallel.tp=2", "checkpoint.save_interval=2"), run)
    ckpt = run / "ckpt"
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and killed_at is None:
        if (ckpt / "latest").is_file():
            temps = list(ckpt.glob(".iter_*.tmp"))
            if temps:
                job.signal(signal.SIGKILL)
                killed_at = temps[0].name
        time.sleep(0.01)
    assert killed_at, job.output(0)[-3000:]
    left = job.survivors()  # the checkpoint writers and dist-checkpointing's Manager die with their rank
    job.wait(60)
    assert not left, left
    latest = (ckpt / "latest").read_text().strip()
    assert f".{latest}.tmp" != killed_at and (ckpt / latest / "COMPLETE").is_file()
    out = run_train(2, _args(cfg, run, "parallel.tp=2", "schedule.train_steps=8"), run / "again")
    assert f"resumed from {ckpt}/{latest}" in out and "removed the unfinished checkpoint" in out


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.betaz=0.9", "unknown config key 'optimizer.betaz'"),
        ("parallel.tp=3", "tp=3 must divide num_attention_heads=4"),
        ("schedule.global_batch_size=7", "global_batch_size=7 is not divisible by schedule.micro_batch_size=2"),
        ("model.name=huge", "unknown model config 'huge'"),
    ],
)
def test_config_errors_are_clear(setup, override, message):
    _, cfg = setup
    r = subprocess.run([sys.executable, "-m", "megatron_spirit.cli.train", str(cfg), override],
                       capture_output=True, text=True, env={**__import__("os").environ, "WORLD_SIZE": "2", "RANK": "0"})
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_warmup_cosine_schedule_is_followed(setup):
    root, cfg = setup
    run = root / "cosine"
    run_train(1, _args(cfg, run, "schedule.train_steps=10", "schedule.lr_schedule=cosine", "schedule.warmup_steps=4",
                       "optimizer.min_lr=1.0e-4", "checkpoint.save_interval=0", "checkpoint.save_on_exit=false"), run)
    lrs = [json.loads(line)["lr"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    # Logged after each step's scheduler update: warm-up to 2e-3 at step 4, then cosine down towards 1e-4.
    assert lrs[:4] == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] == pytest.approx(1e-4)


def test_non_finite_steps_are_skipped_and_counted(setup):
    root, cfg = setup
    run = root / "nonfinite"
    out = run_train(1, _args(cfg, run, "schedule.train_steps=6", "optimizer.lr=1.0e+30", "optimizer.min_lr=1.0e+30",
                             "optimizer.clip_grad=0.0", "checkpoint.save_interval=0",
                             "checkpoint.save_on_exit=false"), run)
    recs = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert "non-finite loss or gradient" in out and "step skipped" in out
    assert recs[-1]["skipped"] >= 1 and recs[-1]["step"] == 6  # training went on and counted the skips
