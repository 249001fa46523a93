"""Start ``spirit-train`` as N real rank processes, the way ``srun`` does (one task per rank, env variables)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from megatron_spirit.parallel.launch import free_port


class Job:
    def __init__(self, nprocs: int, args: list[str], log_dir: Path):
        port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"rank{r}.log" for r in range(nprocs)]
        self.procs = []
        for r in range(nprocs):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            env.pop("SLURM_PROCID", None)
            self.procs.append(subprocess.Popen(  # own process group: see reap()
                [sys.executable, "-m", "megatron_spirit.cli.train", *args], env=env,
                stdout=open(self.logs[r], "w"), stderr=subprocess.STDOUT, start_new_session=True))

    def signal(self, sig) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)

    def wait(self, timeout: float = 300) -> list[int]:
        deadline = time.time() + timeout
        codes = []
        try:
            for p in self.procs:
                try:
                    codes.append(p.wait(timeout=max(1, deadline - time.time())))
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"training job timed out; rank 0 log:\n{self.output(0)[-4000:]}") from None
        finally:
            self.reap()
        return codes

    def reap(self) -> None:
        """Kill whatever is left in the ranks' process groups: a rank killed with SIGKILL cannot stop its own
        children (dist-checkpointing's Manager process), which would otherwise outlive the test."""
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()

    def survivors(self, wait: float = 10.0) -> list[str]:
        """Live processes left in the ranks' process groups once the ranks themselves have exited (waits up
        to ``wait`` seconds for them to go): "pid ppid command" each."""
        for p in self.procs:
            p.wait()
        groups = {p.pid for p in self.procs}
        deadline = time.time() + wait
        while True:
            left = []
            for entry in os.listdir("/proc"):
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    fields = stat[stat.rindex(")") + 2:].split()
                    if int(fields[2]) in groups and fields[0] != "Z":
                        cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
                        left.append(f"{entry} ppid {fields[1]} {cmd}")
                except (ValueError, OSError):
                    continue
            if not left or time.time() > deadline:
                return left
            time.sleep(0.2)

    def output(self, rank: int = 0) -> str:
        return self.logs[rank].read_text()


def run_train(nprocs: int, args: list[str], log_dir: Path, timeout: float = 300, expect: int = 0) -> str:
    job = Job(nprocs, args, log_dir)
    codes = job.wait(timeout)
    assert codes == [expect] * nprocs, f"exit codes {codes}; rank 0 log:\n{job.output(0)[-6000:]}"
    return job.output(0)


def losses(metrics_jsonl: Path) -> dict[int, float]:
    out = {}
    for line in Path(metrics_jsonl).read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out
