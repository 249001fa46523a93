"""slurm/extract_units.sbatch on a real Slurm: an array of expressive-unit extraction shards, script unchanged.

The script's GPU line (--gres=gpu:1) is met by the test cluster's fake GPUs (the code picks the CPU: torch has no
CUDA here); CPUs and memory are overridden on the sbatch command line, the array size too (2 shards, not 8).
"""
import json

from megatron_spirit.cli.units import main as units_main
from megatron_spirit.speech.manifest import UnitsRecord

from .conftest import SLURM_DIR, job_log


def test_array_extracts_expressive_units_per_shard(slurm, job_env, espeak_corpus, tiny_hubert_dir, trained_units,
                                                   tmp_path):
    out = tmp_path / "units"
    args = ["--array=0-1", "--cpus-per-task=1", "--mem=0", str(SLURM_DIR / "extract_units.sbatch"),
            str(espeak_corpus), str(out), str(tiny_hubert_dir), str(trained_units / "km"),
            str(trained_units / "pitch"), str(trained_units / "style")]
    job = slurm.sbatch(args, cwd=tmp_path, env=job_env)
    infos = slurm.wait(job, 300)
    logs = {t: job_log(tmp_path / f"spirit-units-{job}_{t}.out") for t in (0, 1)}
    assert {i.job_id: (i.state, i.exit_code) for i in infos} == {
        f"{job}_0": ("COMPLETED", "0:0"), f"{job}_1": ("COMPLETED", "0:0")}, logs
    assert "gres:gpu:1" in infos[0].fields.get("TresPerNode", ""), infos[0].fields  # the script's GPU line held
    for t in (0, 1):
        assert f"spirit-units: shard {t}/2 on {slurm.node} (restart 0)" in logs[t], logs[t]
        assert (out / f"summary-{t:05d}-of-00002.json").is_file(), sorted(p.name for p in out.iterdir())
    records = [UnitsRecord.from_json(line) for t in (0, 1)
               for line in (out / f"units-{t:05d}-of-00002.jsonl").read_text().splitlines()]
    manifest_ids = [json.loads(line)["id"] for line in espeak_corpus.read_text().splitlines()]
    assert [r.id for r in records] == manifest_ids  # the two shards partition the manifest, in order
    assert all(set(r.streams) == {"hubert", "pitch", "style"} for r in records)  # PITCH + STYLE → expressive
    # The same units as extracting the whole manifest directly with the same quantizers.
    direct = tmp_path / "direct"
    assert units_main(["extract", "--manifest", str(espeak_corpus), "--out", str(direct), "--hubert-model",
                       str(tiny_hubert_dir), "--kmeans", str(trained_units / "km"), "--flavor", "expressive",
                       "--pitch", str(trained_units / "pitch"), "--style", str(trained_units / "style"),
                       "--device", "cpu"]) == 0
    expected = [json.loads(line)["units"] for line in (direct / "units-00000-of-00001.jsonl").read_text().splitlines()]
    got = [json.loads(line)["units"] for t in (0, 1)
           for line in (out / f"units-{t:05d}-of-00002.jsonl").read_text().splitlines()]
    assert got == expected
