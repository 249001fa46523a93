"""A real single-node Slurm cluster for the session, and what the project's sbatch scripts need to run on it.

The cluster (megatron_spirit.testing.slurm_cluster) declares the machine's real CPUs and memory plus 8 fake GPUs
(/dev/null device files), so the production scripts' ``--gres=gpu:1`` / ``--gpus-per-node=8`` lines are accepted
as written. What differs from a real run is only what differs between clusters anyway, given on the sbatch
command line (``--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --mem=0``) or in the environment / config.
Missing Slurm or munge binaries FAIL the tests (CI installs them: Makefile test-system-deps).
"""
import json
import os
import sys
from pathlib import Path

import pytest

from megatron_spirit.testing.slurm_cluster import DEBIAN_PACKAGES, SlurmCluster, missing_commands

# The speech fixtures (tiny HuBERT, espeak corpus, trained quantizers) are shared with tests/speech.
from ..speech.conftest import espeak_corpus, tiny_hubert_dir, trained_units  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """slurmctld + slurmd + munged in a private folder, stopped (jobs cancelled, processes ended) at the end."""
    missing = missing_commands()
    if missing:
        pytest.fail(f"Slurm tests need {', '.join(missing)}: apt-get install -y --no-install-recommends "
                    f"{' '.join(DEBIAN_PACKAGES)} (make test installs them)", pytrace=False)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm_cluster"))
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def job_env():
    """What a user's login shell would have: the venv's commands on PATH, one thread per process."""
    bindir = str(Path(sys.executable).parent)
    return {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


def job_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else f"(no log at {path})"


@pytest.fixture(scope="session")
def slurm_text_dataset(slurm, job_env, spirit_tokenizer_dir, tmp_path_factory):
    """slurm/build_datasets.sbatch run as its users run it (it submits a 2-shard array and a dependent merge).

    Returns (run folder, dataset prefix, the script's stdout, array job id, merge job id, job infos)."""
    from megatron_spirit.synth.text import documents

    root = tmp_path_factory.mktemp("slurm_data")
    corpus = root / "corpus"
    corpus.mkdir()
    docs = list(documents(600, seed=3))
    for i in range(2):  # two input files, given as a glob the script expands
        (corpus / f"part{i}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[i::2]))
    env = dict(job_env, KIND="text", INPUT=str(corpus / "*.jsonl"), TOKENIZER=str(spirit_tokenizer_dir),
               OUT=str(root / "data" / "text"), SHARDS="2")
    out = slurm.run(["bash", SLURM_DIR / "build_datasets.sbatch", "--cpus-per-task=1", "--mem=0"], cwd=root,
                    env=env)
    ids = [w for w in out.split() if w.isdigit()]
    array, merge = ids[0], ids[-1]
    infos = slurm.wait(array, 300) + slurm.wait(merge, 300)
    return root, root / "data" / "text", out, array, merge, infos, len(docs)
