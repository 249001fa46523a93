"""slurm/pretrain_spiritlm_7b.sbatch on a real Slurm at 2 tasks (CPU, gloo, tiny model), unchanged.

Only its resources are overridden on the sbatch command line (one node of 2 tasks with 1 CPU each); the model
comes from configs/tiny_cpu.yaml, data, steps and folders from section.key=value arguments, as a user gives them.
The second test sends the USR1 that ``--signal=B:USR1@300`` sends before the time limit, and checks the whole
chain: script → training tasks → checkpoint → exit 3 → ``scontrol requeue`` → the same job resumes there.
"""
import json
import re

import pytest

from megatron_spirit.parallel.launch import free_port

from .conftest import SLURM_DIR, job_log

SCRIPT = SLURM_DIR / "pretrain_spiritlm_7b.sbatch"
CONFIG = SLURM_DIR.parent / "configs" / "tiny_cpu.yaml"
RESOURCES = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]


@pytest.fixture(scope="module")
def tiny_overrides(slurm_text_dataset, spirit_tokenizer_dir):
    """configs/tiny_cpu.yaml (the demo's tiny model, TP=2, fp32) on the dataset build_datasets.sbatch made, from
    random weights (not the demo's converted base model)."""
    prefix = slurm_text_dataset[1]
    return [f"data.tokenizer={spirit_tokenizer_dir}", f"data.prefixes=[{prefix}]", "data.blend=null",
            "schedule.train_steps=6", "checkpoint.save_interval=3", "logging.log_interval=1",
            "logging.tensorboard=false", "checkpoint.finetune_from=null"]


def _submit(slurm, job_env, run, overrides, *more):
    (run / "logs").mkdir(parents=True)  # the script's --output=logs/%x-%j.out, relative to the submit folder
    env = dict(job_env, MASTER_PORT=str(free_port()))  # job ids restart at 1 per cluster: no derived-port clash
    args = [*RESOURCES, str(SCRIPT), str(CONFIG), *overrides, f"checkpoint.dir={run}/ckpt",
            f"logging.dir={run}/tb", *more]
    job = slurm.sbatch(args, cwd=run, env=env)
    return job, run / "logs" / f"spiritlm-7b-{job}.out"


def _steps(run) -> list[int]:
    metrics = run / "tb" / "metrics.jsonl"
    if not metrics.is_file():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]


def test_pretraining_job_finishes_with_checkpoints(slurm, job_env, tiny_overrides, tmp_path):
    run = tmp_path / "run"
    job, log = _submit(slurm, job_env, run, tiny_overrides)
    [info] = slurm.wait(job, 300)
    out = job_log(log)
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", "0:0", 0), out
    assert f"job {job} restart 0: 2 tasks on {slurm.node}" in out
    assert "starting from random initialisation" in out
    assert "on 2 cpu process(es): tp=2 pp=1 dp=1" in out
    assert "training finished with exit code 0" in out
    assert _steps(run) == list(range(1, 7))
    ckpt = run / "ckpt"
    assert sorted(p.name for p in ckpt.glob("iter_*")) == ["iter_0000003", "iter_0000006"]
    assert (ckpt / "latest").read_text().strip() == "iter_0000006"


def test_usr1_checkpoints_requeues_and_resumes(slurm, job_env, tiny_overrides, tmp_path):
    steps = 24
    run = tmp_path / "run"
    job, log = _submit(slurm, job_env, run, tiny_overrides, f"schedule.train_steps={steps}",
                       "checkpoint.save_interval=0")
    # Wait until training is under way (signal handlers installed), then signal the batch script only, exactly
    # what Slurm does 300 s before the time limit (#SBATCH --signal=B:USR1@300).
    slurm.wait(job, 300, until=lambda infos: len(_steps(run)) >= 2 or infos[0].done)
    assert slurm.jobs(job)[0].state == "RUNNING", job_log(log)
    slurm.run(["scancel", "--signal=USR1", "--batch", job])
    # The script requeues the job; it starts again after the requeue delay (cred_expire=10 s on this cluster;
    # forcing StartTime=now raced slurmd: "Job N already killed, do not launch batch job" → FAILED).
    [info] = slurm.wait(job, 300, until=lambda infos: infos[0].done and (infos[0].restarts >= 1
                                                                          or infos[0].state != "COMPLETED"))
    out = job_log(log)
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", "0:0", 1), out
    assert "USR1 received: asking every training task to checkpoint and stop" in out
    m = re.search(r"signal \d+: saved at step (\d+); exiting with 3 so the job is requeued", out)
    assert m, out
    k = int(m.group(1))
    assert 2 <= k < steps
    assert f"checkpoint saved after a signal: requeueing job {job}" in out
    assert f"job {job} restart 1: 2 tasks" in out
    assert f"resumed from {run}/ckpt/iter_{k:07d} at step {k}" in out
    assert out.index("requeueing job") < out.index("resumed from") < out.index("training finished with exit code 0")
    done = _steps(run)
    assert done[-1] == steps and sorted(set(done)) == list(range(1, steps + 1))
    assert done.count(k + 1) == 1  # steps after the checkpoint ran once: the second run began at k + 1
    assert (run / "ckpt" / "latest").read_text().strip() == f"iter_{steps:07d}"
    assert (run / "ckpt" / f"iter_{k:07d}").is_dir()
