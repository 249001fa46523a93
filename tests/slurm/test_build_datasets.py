"""slurm/build_datasets.sbatch on a real Slurm: a shard-build array, then a merge that waits for it (afterok)."""
from .conftest import job_log


def test_array_builds_shards_and_dependent_merge_merges(slurm, slurm_text_dataset):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    root, prefix, out, array, merge, infos, n_docs = slurm_text_dataset
    assert f"submitted shard builds as job {array} (array 0-1) and the merge as job {merge}" in out
    logs = "\n".join(job_log(p) for p in sorted(root.glob("*.out")))
    states = {i.job_id: (i.state, i.exit_code) for i in infos}
    assert states == {f"{array}_0": ("COMPLETED", "0:0"), f"{array}_1": ("COMPLETED", "0:0"),
                      merge: ("COMPLETED", "0:0")}, logs
    # The merge really depended on the array, and ran after both of its tasks.
    merge_info = slurm.jobs(merge)[0].fields
    assert merge_info["JobName"] == "spirit-data-merge"
    ends = [slurm.jobs(f"{array}_{t}")[0].fields["EndTime"] for t in (0, 1)]
    assert merge_info["StartTime"] >= max(ends)
    # Each task built its shard (Slurm's output files: %x-%A_%a.out), the merge made the whole dataset.
    for t in (0, 1):
        assert (root / f"spirit-data-{array}_{t}.out").is_file()
    merged = IndexedDataset(str(prefix))
    shards = [IndexedDataset(f"{prefix}-shard{t:05d}of00002") for t in (0, 1)]
    assert len(shards) == 2 and all(len(s) > 0 for s in shards)
    assert len(merged) == sum(len(s) for s in shards)
    assert len(merged) >= n_docs  # every document made at least one sequence
    assert [list(merged[i]) for i in range(3)] == [list(shards[0][i]) for i in range(3)]
