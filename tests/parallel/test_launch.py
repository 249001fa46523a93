"""The multi-process launcher: real processes, gloo, per-rank results, loud failures."""
import pytest

from megatron_spirit.parallel.launch import RankFailed, run_ranks


def test_results_per_rank_over_gloo():
    results = run_ranks("tests.parallel.workers:rank_sum", 3, args=(10,), timeout=120)
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert all(r["world"] == 3 and r["backend"] == "gloo" and r["omp"] == "1" for r in results)
    assert all(r["sum"] == 10 * (0 + 1 + 2) for r in results)


def test_failing_rank_raises_with_its_traceback():
    with pytest.raises(RankFailed) as e:
        run_ranks("tests.parallel.workers:fail_on", 2, args=(1,), timeout=120)
    assert "boom on rank 1" in str(e.value)
    assert "ValueError" in str(e.value)


def test_bad_target_fails_in_the_caller():
    with pytest.raises((ValueError, ImportError, AttributeError)):
        run_ranks("tests.parallel.workers:no_such_function", 2)
    with pytest.raises(ValueError):
        run_ranks("tests.parallel.workers", 2)


def test_run_command_sets_torchrun_environment_and_reports_failures():
    import sys

    from megatron_spirit.parallel.launch import run_command

    show = "import os; print('R', os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['OMP_NUM_THREADS'])"
    outs = run_command([sys.executable, "-c", show], 2, timeout=60)
    assert [o.split() for o in outs] == [["R", "0", "2", "1"], ["R", "1", "2", "1"]]
    fail = "import os, sys; r = os.environ['RANK']; print('rank', r, 'says hi'); sys.exit(3 if r == '1' else 0)"
    with pytest.raises(RankFailed) as e:
        run_command([sys.executable, "-c", fail], 2, timeout=60)
    assert "rank 1 says hi" in str(e.value) and "exit 3" in str(e.value)
