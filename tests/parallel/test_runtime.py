"""Launcher environments: torchrun and Slurm variables → rank, world, local rank, rendezvous."""
import pytest

from megatron_spirit.parallel.runtime import read_env


def test_torchrun_variables():
    env = read_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.source) == (
        3, 8, 1, "n1", 1234, "torchrun")


def test_slurm_variables_and_nodelist():
    env = read_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                    "SLURM_JOB_NODELIST": "gpu[07-08,11]", "SLURM_JOB_ID": "4242"})
    assert (env.rank, env.world_size, env.local_rank, env.source) == (5, 16, 1, "slurm")
    assert env.master_addr in ("gpu07",)  # first host (scontrol when installed, else parsed)
    assert env.master_port == 20000 + 4242
    env = read_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "MASTER_ADDR": "head", "MASTER_PORT": "999"})
    assert (env.master_addr, env.master_port) == ("head", 999)


def test_torchrun_wins_over_slurm_and_single_default():
    env = read_env({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "7", "SLURM_NTASKS": "9"})
    assert (env.rank, env.world_size, env.source) == (0, 2, "torchrun")
    assert read_env({}).world_size == 1 and read_env({}).source == "single"


def test_bad_environment_is_named():
    with pytest.raises(ValueError, match="RANK"):
        read_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="outside a world"):
        read_env({"RANK": "2", "WORLD_SIZE": "2"})
