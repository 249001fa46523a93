"""spirit-eval score --megatron: the same scores as the Hugging Face export of the same weights, at TP1 (with the
items split over two data-parallel replicas), TP2 and PP2, in one launch of two processes (gloo, fp32)."""
import json

import pytest

from megatron_spirit.cli.eval import main
from megatron_spirit.parallel.launch import run_ranks

from megatron_spirit.evaluation import layouts
from .conftest import tiny_llama

TOL = 1e-4
LAYOUTS = [(1, 1), (2, 1), (1, 2)]  # (tp, pp) at world 2: dp2, dp1, dp1
#: TP1 and PP2 pack rows (document masks); TP2 takes the default layout, whose plain rows come with no mask.
FLAGS = [["--pack"], [], ["--pack"]]
TASKS = "swuggy:T,sblimp:T,tsc:T"
WORDS = [("a", "cat", "cag", 1), ("b", "dog", "dag", 2), ("c", "house", "hoose", 3), ("d", "tree", "trea", 4),
         ("e", "water", "wotter", 5)]
SENTENCES = [("1", "agr", "x", "the dogs run home.", "the dogs runs home."),
             ("2", "agr", "x", "a man sings.", "a man sing."), ("3", "isl", "y", "who did you see?", "who you see did?")]
STORIES = [("1", "the man went home. he was tired.", "he slept.", "the sky is green."),
           ("2", "she baked bread.", "it was warm and good.", "dogs fly south."),
           ("3", "we went to the sea.", "we swam.", "the sea sang a long song to the moon.")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spirit_tokenizer_dir):
    """{"hf": per-item scores, (tp, pp): per-item scores or the error}: a random base LLaMA converted to Megatron
    (new rows for the SpiRit tokens) and exported back; the export scored here, the checkpoint in one
    two-process launch."""
    from megatron_spirit.convert.hf_to_megatron import hf_to_megatron
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf
    from megatron_spirit.parallel import cpu
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    root = tmp_path_factory.mktemp("meg-eval")
    tiny_llama(SpiritTokenizer(spirit_tokenizer_dir).vocab.base_size, seed=3).save_pretrained(root / "base")
    with cpu.compat():
        ckpt = hf_to_megatron(root / "base", spirit_tokenizer_dir, root / "ckpt", tp=2, pp=1, progress=False)
        export = megatron_to_hf(ckpt, root / "export", progress=False)
    layouts.lexical(root / "zr", WORDS)
    layouts.syntactic(root / "zr", SENTENCES)
    layouts.cross_modal(root / "cm", STORIES)
    common = ["--tasks", TASKS, "--data", f"swuggy={root / 'zr' / 'lexical'}",
              "--data", f"sblimp={root / 'zr' / 'syntactic'}", "--data", f"cm-tsc={root / 'cm'}",
              "--row-tokens", "48", "--batch-tokens", "160"]  # several rows per batch, several batches
    assert main(["score", "--model", str(export), *common, "--out", str(root / "hf")]) == 0
    report = run_ranks("tests.evaluation.workers:score_layouts", 2,
                       args=(str(ckpt), common, LAYOUTS, str(root / "meg"), FLAGS), timeout=600)[0]
    out = {"hf": _scores(root / "hf")}
    for layout, (codes, error) in report.items():
        out[layout] = error or (codes[0] if codes and codes[0] else None) or _scores(root / "meg" / _name(layout))
    return out


def _name(layout):
    return f"tp{layout[0]}-pp{layout[1]}"


def _scores(folder):
    out = {}
    for f in sorted((folder / "items").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            out[(f.stem, rec["id"], tuple(rec["names"]))] = [c["logprob"] for c in rec["candidates"]]
    return out


@pytest.mark.xdist_group("megatron-eval")
@pytest.mark.parametrize("layout", LAYOUTS, ids=[_name(x) for x in LAYOUTS])
def test_megatron_scores_match_hf_export(runs, layout):
    got, want = runs[layout], runs["hf"]
    assert isinstance(got, dict), f"{_name(layout)} failed: {got}"
    assert set(got) == set(want) and len(want) >= 10, len(want)
    diff = max(abs(a - b) for k in want for a, b in zip(got[k], want[k]))
    assert diff <= TOL, diff
    assert len({round(v[0], 3) for v in want.values()}) > 5  # the scores differ from item to item
