"""Checkpoints under failure: SIGTERM to torchrun, a corrupt newest checkpoint, a full disk, the replayed log.

One torchrun run is stopped with SIGTERM; its signal-triggered checkpoint is then truncated (COMPLETE marker
kept), and the resumes from that folder check the fallback (and ``--no-fallback``) and the metrics log.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megatron_spirit.parallel.launch import free_port, run_ranks

from .launch import Job, run_train
from .test_trainer import _args, setup  # noqa: F401 - the module's dataset and tiny-model config


def _torchrun(args, log):
    cmd = [sys.executable, "-m", "megatron_spirit.cli.torchrun", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "megatron_spirit.cli.train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        env.pop(k, None)
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _reap(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's own group (torchrun's workers have their own: see below)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def signalled(setup):  # noqa: F811
    """spirit-torchrun (torchrun itself, plus the workers' exit code), 2 workers, checkpoints every 2 steps,
    SIGTERM to the launcher once step 5 is logged."""
    root, cfg = setup
    run = root / "torchrun"
    run.mkdir()
    log = run / "torchrun.log"
    proc = _torchrun(_args(cfg, run, "parallel.tp=2", "checkpoint.save_interval=2", "checkpoint.keep_last=2"), log)
    metrics = run / "logs" / "metrics.jsonl"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 5):
            assert proc.poll() is None, log.read_text()[-4000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        _reap(proc)
    return run, code, log.read_text()


def test_sigterm_to_torchrun_saves_and_workers_exit_with_the_requeue_code(signalled):
    run, code, out = signalled
    assert "BrokenPipeError" not in out and "Traceback" not in out.split("Received")[0], out[-4000:]
    # The workers save and exit with 3; torchrun's agent then re-raises the signal (it alone would exit 1), and
    # spirit-torchrun exits with the workers' code.
    assert "exiting with 3 so the job is requeued" in out, out[-4000:]
    assert code == 3 and "SIGTERM received; the workers exited with 3" in out, (code, out[-3000:])
    k = int((run / "ckpt" / "latest").read_text().strip().split("_")[1])
    assert k >= 5 and (run / "ckpt" / f"iter_{k:07d}" / "checksums.json").is_file()


def _truncate_newest(run):
    ckpt = run / "ckpt"
    newest = ckpt / (ckpt / "latest").read_text().strip()
    shard = max(newest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    assert (newest / "COMPLETE").is_file()
    return newest, shard


def test_corrupt_newest_checkpoint_falls_back_and_the_log_keeps_each_step_once(setup, signalled):  # noqa: F811
    root, cfg = setup
    run, _, _ = signalled
    newest, shard = _truncate_newest(run)
    k = int(newest.name.split("_")[1])
    complete = sorted(p for p in (run / "ckpt").glob("iter_*") if (p / "COMPLETE").is_file())
    assert complete[-1] == newest and len(complete) == 2  # keep_last=2
    previous = complete[0]

    stop = Job(2, [*_args(cfg, run, "parallel.tp=2"), "--no-fallback"], run / "nofallback")
    assert stop.wait(240) == [1, 1]
    assert f"{shard} has " in stop.output(0) and "truncated" in stop.output(0), stop.output(0)[-3000:]

    steps = k + 2
    out = run_train(2, _args(cfg, run, "parallel.tp=2", f"schedule.train_steps={steps}"), run / "again")
    assert f"WARNING: checkpoint {newest} is corrupt: {shard} has" in out, out[-3000:]
    assert f"falling back to the previous complete checkpoint {previous}" in out
    assert f"resumed from {previous} at step {int(previous.name[5:])}" in out
    logged = [json.loads(line)["step"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1)), logged  # the replayed steps are not there twice


def test_full_disk_during_save_names_the_folder_and_keeps_the_previous_checkpoint(setup):  # noqa: F811
    root, cfg = setup
    run = root / "fulldisk"
    results = run_ranks("tests.training.workers:save_on_a_full_disk", 2,
                        args=(str(cfg), _args(cfg, run, "parallel.tp=2")[1:]), timeout=300)
    for messages, latest, problems in results:
        for step, message in zip((1, 2), messages):
            assert f"no space left on device writing {run}/ckpt/.iter_000000{step}.tmp" in message, message
            assert f"the previous checkpoint {run}/ckpt/iter_0000000 is intact" in message
        assert latest == f"{run}/ckpt/iter_0000000" and problems == []
