"""A real single-node Slurm cluster (munge + slurmctld + slurmd) in a private folder, for tests and local tries.

The project's sbatch scripts are its users' entry point; the tests submit them, unchanged, to this cluster. As
root with Debian's ``slurmctld slurmd slurm-client munge`` packages::

    with SlurmCluster(Path("/tmp/slurm-try")) as cluster:
        job = cluster.sbatch(["--nodes=1", "--ntasks-per-node=2", "slurm/pretrain_spiritlm_7b.sbatch", ...])
        cluster.wait(job)

Everything (munge key, slurm.conf, state, spool, logs, job-completion records) lives under the folder, but
munge's socket (a short /tmp/spirit-munge-* folder munged accepts); the daemons listen on free ports, so several
clusters (e.g. one per pytest-xdist worker) can coexist. Clients need ``SLURM_CONF``: use ``cluster.env``.
A requeued job restarts ~10 s later (``cred_expire=10``); forcing ``StartTime=now`` sooner can make slurmd
refuse the launch ("already killed") and fail the job.
The node declares the machine's real CPUs and memory (``slurmd -C``) and ``gpus`` fake GPUs (device files that
are symlinks to /dev/null), so scripts asking for ``--gpus-per-node``/``--gres=gpu`` are accepted as written;
CPU counts and node counts are overridden on the sbatch command line, as on any other cluster.
``stop()`` cancels the jobs, then ends every process the cluster started (found by a marker in their
environment: slurmstepd outlives slurmd) and the daemons, by pid.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: Debian packages providing the commands below (``apt-get install -y --no-install-recommends ...``).
DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "munged", "mungekey",
            "munge", "unmunge")
#: Job states after which a job will not run again by itself.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}
_MARKER = "SPIRIT_SLURM_CLUSTER"


class SlurmError(RuntimeError):
    """The cluster could not start, a command failed, or a job did not reach the wanted state in time."""


def missing_commands() -> list[str]:
    return [c for c in COMMANDS if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]


@dataclass(frozen=True)
class JobInfo:
    """One line of ``scontrol show job``: an array task or a plain job."""

    job_id: str  # "12" or "12_3" for array task 3 of array job 12
    state: str
    exit_code: str  # "0:0" = return code : signal
    restarts: int
    fields: dict

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(cmd: str) -> str:
    return shutil.which(cmd) or str(Path("/usr/sbin", cmd))


class SlurmCluster:
    """Start with ``start()`` (or ``with``); ``env`` is what Slurm clients need (``SLURM_CONF``)."""

    def __init__(self, root: Path, gpus: int = 8, partition: str = "test"):
        self.root = Path(root).resolve()
        self.gpus = gpus
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.log_dir = self.root / "log"
        self.jobcomp = self.log_dir / "jobcomp.txt"
        self._procs: dict[str, subprocess.Popen] = {}
        self.socket_dir: Path | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        self.env["SLURM_CONF"] = str(self.conf)
        self.env[_MARKER] = str(self.root)  # daemons, clients and (exported to) jobs carry it; see stop()

    # ------------------------------------------------------------------------------------------------ setup
    def _write_config(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log", "dev"):
            (r / d).mkdir(parents=True, exist_ok=True)
        # munged wants every folder above its socket executable by all (pytest's tmp folders are 0700), and a
        # socket path is at most 107 bytes: the socket gets a short folder of its own under /tmp.
        if self.socket_dir is None:
            self.socket_dir = Path(tempfile.mkdtemp(prefix="spirit-munge-", dir="/tmp"))
            self.socket_dir.chmod(0o711)
        self.munge_socket = self.socket_dir / "munge.socket"
        hw = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True)
        node_line = hw.stdout.splitlines()[0] if hw.returncode == 0 and hw.stdout.startswith("NodeName=") else ""
        if not node_line:
            raise SlurmError(f"slurmd -C failed ({hw.returncode}): {hw.stderr.strip()}")
        layout = " ".join(w for w in node_line.split()[1:] if not w.startswith("UpTime"))
        for i in range(self.gpus):
            dev = r / "dev" / f"nvidia{i}"
            if not dev.is_symlink():
                dev.symlink_to("/dev/null")
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        lines = [
            "ClusterName=spirit-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",  # requeued jobs wait ~cred_expire
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",  # a lasting record of every job's exit code (no slurmdbd here)
            f"JobCompLoc={self.jobcomp}",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=bf_interval=1,sched_interval=2",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "EnforcePartLimits=ALL",  # an impossible request is refused at submission, not left pending
            "MailProg=/bin/true",
            "MinJobAge=600",
            "KillWait=5",
            "SlurmdParameters=config_overrides",
            *(["GresTypes=gpu"] if self.gpus else []),
            f"NodeName={self.node} NodeAddr=127.0.0.1 {layout}{gres} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if self.gpus:
            (r / "gres.conf").write_text(
                f"NodeName={self.node} Name=gpu File={r}/dev/nvidia[0-{self.gpus - 1}]\n")

    def _spawn(self, name: str, argv: list[str]) -> None:
        env = self.env
        log = open(self.log_dir / f"{name}.stdout", "ab")
        self._procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def start(self, timeout: float = 60) -> "SlurmCluster":
        missing = missing_commands()
        if missing:
            raise SlurmError(f"Slurm/munge commands missing: {', '.join(missing)}; install the Debian packages "
                             f"{' '.join(DEBIAN_PACKAGES)} (apt-get install -y --no-install-recommends ...)")
        if os.geteuid() != 0:
            raise SlurmError("the test cluster runs its daemons as root (SlurmUser=root); run as root")
        self._write_config()
        m = self.root / "munge"
        key = m / "munge.key"
        if not key.exists():
            self._run([_which("mungekey"), "--create", f"--keyfile={key}"])
        self._spawn("munged", [_which("munged"), "--foreground", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--log-file={self.log_dir}/munged.log",
                               f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed"])
        self._until(lambda: self.munge_socket.exists(), timeout, "munged to open its socket", "munged")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._until(lambda: self._ok(["scontrol", "ping"], "is UP"), timeout, "slurmctld to answer", "slurmctld")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
        self._until(lambda: self._ok(["sinfo", "-h", "-o", "%t"], "idle"), timeout, "the node to be idle",
                    "slurmd")
        return self

    def _ok(self, argv, needle) -> bool:
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        return r.returncode == 0 and needle in r.stdout

    def _until(self, cond, timeout: float, what: str, daemon: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if daemon and self._procs[daemon].poll() is not None:
                break
            time.sleep(0.2)
        raise SlurmError(f"timed out waiting for {what}; logs:\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        out = []
        for p in sorted(self.log_dir.glob("*")):
            if p.is_file() and p.name != "jobcomp.txt":
                lines = p.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {p}\n" + "\n".join(lines))
        return "\n".join(out)

    # ------------------------------------------------------------------------------------------------ clients
    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(argv, env=kw.pop("env", self.env), capture_output=True, text=True, **kw)
        if r.returncode != 0:
            raise SlurmError(f"{' '.join(map(str, argv))} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def run(self, argv: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
        """Run a Slurm client (or a script that calls them) with the cluster's environment; its stdout."""
        return self._run(list(map(str, argv)), cwd=cwd, env=dict(self.env, **(env or {}))).stdout

    def sbatch(self, args: list, cwd: Path | None = None, env: dict | None = None) -> str:
        """Submit; the job id (for an array, the array job's id)."""
        out = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env)
        return out.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[JobInfo]:
        """Every line ``scontrol show job`` has for the job (an array job: one per task)."""
        r = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], env=self.env, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise SlurmError(f"scontrol show job {job_id}: {r.stderr.strip()}")
        infos = []
        for line in r.stdout.splitlines():
            fields = dict(kv.split("=", 1) for kv in re.findall(r"(\S+?=\S*)", line))
            jid = fields["JobId"]
            if fields.get("ArrayTaskId") and "[" not in fields["ArrayTaskId"]:
                jid = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            infos.append(JobInfo(jid, fields["JobState"], fields.get("ExitCode", ""),
                                 int(fields.get("Restarts", 0)), fields))
        return infos

    def wait(self, job_id: str, timeout: float = 300, until=None) -> list[JobInfo]:
        """Poll until ``until(infos)`` (default: every task in a final state); the last infos."""
        until = until or (lambda infos: bool(infos) and all(i.done for i in infos))
        deadline = time.monotonic() + timeout
        infos: list[JobInfo] = []
        while time.monotonic() < deadline:
            infos = self.jobs(job_id)
            if until(infos):
                return infos
            time.sleep(0.5)
        raise SlurmError(f"job {job_id} not done in {timeout:.0f} s: {[(i.job_id, i.state) for i in infos]}\n"
                         f"{self.logs()}")

    # ------------------------------------------------------------------------------------------------ stop
    def _marked_pids(self) -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                env = (d / "environ").read_bytes()
            except OSError:
                continue
            if f"{_MARKER}={self.root}".encode() + b"\0" in env + b"\0":
                pids.append(int(d.name))
        return pids

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, and end anything they left behind."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--partition", self.partition], env=self.env,
                           capture_output=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                r = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=self.env, capture_output=True,
                                   text=True)
                active = [ln for ln in r.stdout.splitlines() if ln.split()[-1] not in FINAL_STATES]
                if r.returncode != 0 or not active:
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # slurmstepd and job processes outlive slurmd; they carry the marker in their environment.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._marked_pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.1)
            if not pids:
                break
        self._procs.clear()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None

    def __enter__(self) -> "SlurmCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (stopped daemons can linger as zombies of their parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    """Run a local cluster until Ctrl-C, to try the sbatch scripts by hand."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m megatron_spirit.testing.slurm_cluster",
        description="Start a single-node Slurm cluster (munge, slurmctld, slurmd; 8 fake GPUs) in FOLDER as root, "
        "print the SLURM_CONF to export in another shell, and stop it (cancelling jobs) on Ctrl-C. Needs the "
        f"Debian packages {' '.join(DEBIAN_PACKAGES)}. Example, in the other shell: sbatch --nodes=1 "
        "--ntasks-per-node=2 --cpus-per-task=1 slurm/pretrain_spiritlm_7b.sbatch configs/tiny_cpu.yaml ...",
    )
    p.add_argument("folder", type=Path, help="state, logs and config go here (reused if it exists)")
    p.add_argument("--gpus", type=int, default=8, help="fake GPUs the node declares (default 8)")
    args = p.parse_args(argv)
    cluster = SlurmCluster(args.folder, gpus=args.gpus)
    try:
        cluster.start()
    except SlurmError as e:
        cluster.stop()
        print(f"slurm_cluster: {e}", file=sys.stderr)
        return 2
    print(f"cluster up: export SLURM_CONF={cluster.conf}   (logs in {cluster.log_dir}; Ctrl-C stops it)", flush=True)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after start(): the daemons keep the default mask
    try:
        signal.sigwait(stop_signals)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
