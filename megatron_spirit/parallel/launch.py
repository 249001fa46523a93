"""Run a function in N real processes (one per rank) with torchrun-style environment and gloo; collect results.

For tests and small CPU jobs (the trainer's real launcher is torchrun or srun)::

    from megatron_spirit.parallel.launch import run_ranks
    results = run_ranks("tests.parallel.workers:layout_check", world_size=4, args=(cfg,), timeout=300)
    # results[r] is what rank r's function returned (must be picklable)
    outputs = run_command([sys.executable, "-m", "megatron_spirit.cli.train", ...], world_size=2)

The target is ``"package.module:function"`` (imported fresh in each child, so it must be importable from
the child's ``sys.path``; the caller's path is passed on). Each child gets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` and ``OMP_NUM_THREADS=1``, switches on ``parallel.cpu`` and calls
``parallel.runtime.init_distributed()`` first, runs the function, and tears the process group down. A rank
that raises makes ``run_ranks`` raise ``RankFailed`` carrying that rank's traceback; ranks still waiting on
the failed one are killed instead of hanging.
"""
from __future__ import annotations

import importlib
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Sequence


class RankFailed(RuntimeError):
    """A rank exited with an error; the message holds its traceback/output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve(target: str):
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"target {target!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def _child_main(target: str, args_file: str, result_file: str) -> int:
    """Entry of one rank (``python -m megatron_spirit.parallel.launch TARGET ARGS RESULT``)."""
    import torch

    torch.set_num_threads(1)
    from . import cpu, runtime

    try:
        with open(args_file, "rb") as f:
            args, kwargs = pickle.load(f)
        cpu.enable()  # this process's one switch for the CUDA-less mode (a no-op with CUDA)
        runtime.init_distributed(timeout_minutes=5)
        value = resolve(target)(*args, **kwargs)
        payload = ("ok", value)
        code = 0
    except BaseException:  # noqa: BLE001 - every failure goes back to the parent
        payload = ("error", traceback.format_exc())
        code = 1
    tmp = result_file + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    os.replace(tmp, result_file)
    if code == 0:
        try:
            runtime.teardown()
        except Exception:  # noqa: BLE001 - results are already written
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit skips the atexit hook that would stop this process's multiprocessing children (dist-checkpointing's
    # save starts a Manager process): stop them here, or each rank leaves one orphaned.
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()
        child.join(5)
    # Skip interpreter teardown: gloo threads of a failed peer can hang it.
    os._exit(code)


def run_ranks(
    target: str,
    world_size: int,
    args: Sequence[Any] = (),
    kwargs: dict | None = None,
    timeout: float = 600.0,
    env: dict | None = None,
) -> list[Any]:
    """Run ``target(*args, **kwargs)`` on ranks 0..world_size-1 in separate processes; return per-rank results."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    resolve(target)  # fail early, in the caller, on a bad target
    with tempfile.TemporaryDirectory(prefix="spirit-launch-") as tmp:
        args_file = str(Path(tmp) / "args.pkl")
        with open(args_file, "wb") as f:
            pickle.dump((tuple(args), dict(kwargs or {})), f)
        port = free_port()
        base = dict(os.environ)
        base.update(env or {})
        base.update(
            OMP_NUM_THREADS="1",
            TOKENIZERS_PARALLELISM="false",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE=str(world_size),
            PYTHONPATH=os.pathsep.join([p for p in sys.path if p] + [base.get("PYTHONPATH", "")]),
        )
        results = [str(Path(tmp) / f"rank{rank}.pkl") for rank in range(world_size)]
        cmds = [[sys.executable, "-m", "megatron_spirit.parallel.launch", target, args_file, r] for r in results]
        procs, outputs, failed = _spawn_and_wait(cmds, base, tmp, results, timeout)
        if failed is not None:
            rank, why = failed
            reports = []
            for r, result in enumerate(results):
                if os.path.exists(result):
                    with open(result, "rb") as f:
                        status, value = pickle.load(f)
                    if status == "error":
                        reports.append(f"--- rank {r} traceback ---\n{value}")
            if not reports:
                reports.append(f"--- rank {rank} output ---\n{outputs[rank][-8000:]}")
            raise RankFailed(f"{target} failed on rank {rank} of {world_size} ({why})\n" + "\n".join(reports))
        values = []
        for rank, result in enumerate(results):
            with open(result, "rb") as f:
                status, value = pickle.load(f)
            values.append(value)
        return values


def run_command(
    command: Sequence[str], world_size: int, timeout: float = 600.0, env: dict | None = None, cwd: str | None = None
) -> list[str]:
    """Run ``command`` (e.g. ``[sys.executable, "-m", "megatron_spirit.cli.train", ...]``) as ranks
    0..world_size-1 with torchrun's environment variables, as torchrun would on one node; returns each rank's
    output. A rank exiting non-zero raises ``RankFailed`` with the outputs of every failed rank."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    base = dict(os.environ)
    base.update(env or {})
    base.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(free_port()), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    with tempfile.TemporaryDirectory(prefix="spirit-launch-") as tmp:
        procs, outputs, failed = _spawn_and_wait([list(command)] * world_size, base, tmp, None, timeout, cwd)
    if failed is not None:
        rank, why = failed
        bad = [r for r, p in enumerate(procs) if p.returncode != 0] or [rank]
        text = "\n".join(f"--- rank {r} output (exit {procs[r].returncode}) ---\n{outputs[r][-6000:]}" for r in bad)
        raise RankFailed(f"{' '.join(map(str, command))} failed on rank {rank} of {world_size} ({why})\n{text}")
    return outputs


def _spawn_and_wait(cmds: list, base_env: dict, tmp: str, results, timeout: float, cwd: str | None = None):
    """Start ``cmds[r]`` as rank ``r`` (torchrun-style RANK/LOCAL_RANK), wait for all, kill leftovers; return
    (processes, each rank's output, the first failure or None)."""
    procs, logs = [], []
    for rank, cmd in enumerate(cmds):
        log = open(Path(tmp) / f"rank{rank}.log", "w+b")
        child_env = dict(base_env, RANK=str(rank), LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen(cmd, env=child_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    try:
        failed = _wait(procs, results, timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read().decode(errors="replace"))
        log.close()
    return procs, outputs, failed


def _wait(procs, results, timeout):
    """Wait for all ranks; return (rank, reason) of the first failure, or None."""
    deadline = time.monotonic() + timeout
    while True:
        done = True
        for rank, p in enumerate(procs):
            code = p.poll()
            if code is None:
                done = False
            elif code != 0:
                _grace(procs, 3.0)  # let peers of a failed rank write their own tracebacks
                return rank, f"exit code {code}"
            elif results is not None and not os.path.exists(results[rank]):
                return rank, "exited without a result"
        if done:
            return None
        if time.monotonic() > deadline:
            slow = [r for r, p in enumerate(procs) if p.poll() is None]
            return slow[0], f"timed out after {timeout:.0f} s (ranks still running: {slow})"
        time.sleep(0.05)


def _grace(procs, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(p.poll() is None for p in procs):
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:4]))
