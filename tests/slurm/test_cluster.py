"""The test cluster itself: a clear failure without the Slurm packages, and nothing left running after stop()."""
import os
import socket

import pytest

from megatron_spirit.testing.slurm_cluster import SlurmCluster, SlurmError, missing_commands


def test_missing_binaries_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # sbatch & co. live in /usr/bin: not found
    assert "sbatch" in missing_commands()
    with pytest.raises(SlurmError, match="slurmctld slurmd slurm-client munge"):
        SlurmCluster(tmp_path / "c").start()


def test_stop_cancels_jobs_and_ends_every_process(tmp_path):
    missing = missing_commands()
    if missing:
        pytest.fail(f"Slurm tests need {', '.join(missing)} (make test installs them)", pytrace=False)
    cluster = SlurmCluster(tmp_path / "c", gpus=0)
    with cluster:
        job = cluster.sbatch(["--wrap", "srun sleep 600 & sleep 600", f"--output={tmp_path}/out-%j.txt"])
        cluster.wait(job, 120, until=lambda infos: infos[0].state == "RUNNING")
        cluster.wait(job, 60, until=lambda infos: len(_sleeps()) >= 2)  # the batch script's and the step's
        pids = cluster._marked_pids()
        assert len(pids) >= 4  # munged, slurmctld, slurmd, slurmstepd(s), the job's shell and sleeps
        ports = cluster.ctld_port, cluster.slurmd_port
    assert cluster._marked_pids() == []
    assert not [p for p in pids if _alive(p)]
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not os.path.exists(cluster.munge_socket)


def _sleeps():
    out = []
    for d in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0") if d.isdigit() else []
            if argv[:1] and os.path.basename(argv[0]) == b"sleep" and argv[1:2] == [b"600"]:
                out.append(int(d))
        except OSError:
            pass
    return out


def _alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
