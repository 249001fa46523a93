"""Per-rank body of the Megatron scoring test (run with ``parallel.launch.run_ranks``)."""
from __future__ import annotations


def score_layouts(ckpt: str, common: list[str], layouts: list[tuple[int, int]], out_root: str,
                  flags: list[list[str]] | None = None) -> dict:
    """``spirit-eval score --megatron`` at each (tp, pp) in this one world (with that layout's extra ``flags``);
    {(tp, pp): (exit code, error)}."""
    from megatron_spirit.cli.eval import main
    from tests.parallel.workers import on_every_rank

    report = {}
    for i, (tp, pp) in enumerate(layouts):
        argv = ["score", "--megatron", ckpt, "--tp", str(tp), "--pp", str(pp), *common, *(flags[i] if flags else []),
                "--out", f"{out_root}/tp{tp}-pp{pp}"]
        report[(tp, pp)] = on_every_rank(lambda: main(argv))
    return report
