"""MMLU in the published csv layout: prompt, shot dropping, one-token letters, accuracy; the CLI."""
import csv
import json

import pytest
import torch

from megatron_spirit.evaluation.benchmarks import BenchmarkError
from megatron_spirit.evaluation.mmlu import LETTERS, evaluate_mmlu, mmlu_items, prompt_text, read_mmlu
from megatron_spirit.evaluation.prompts import PromptBuilder, PromptConfig
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer


def _write(root, subject, split, rows):
    (root / split).mkdir(parents=True, exist_ok=True)
    with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture
def mmlu_dir(tmp_path):
    for subject in ("astronomy", "world_history"):
        _write(tmp_path, subject, "dev", [[f"dev q{i}", "w", "x", "y", "z", LETTERS[i % 4]] for i in range(5)])
        _write(tmp_path, subject, "test", [[f"q{i}", "a", "b", "c", "d", LETTERS[(i + 1) % 4]] for i in range(3)])
    return tmp_path


class PrefersLetter:
    """Logits that put the most mass on one letter id at every position."""

    def __init__(self, tok, letter, rows):
        self.bias = torch.zeros(rows)
        self.bias[tok.encode_text(letter)[-1]] = 5.0
        self.calls = 0

    def __call__(self, ids, positions, allowed, rows, cols):
        self.calls += 1
        return self.bias.expand(len(rows), -1).clone()


def test_mmlu_prompt_and_accuracy(mmlu_dir, spirit_tokenizer_dir):
    tok = SpiritTokenizer(spirit_tokenizer_dir)
    data = read_mmlu(mmlu_dir)
    assert set(data) == {"astronomy", "world_history"} and len(data["astronomy"][0]) == 5
    text = prompt_text("world_history", data["world_history"][0][:2], data["world_history"][1][0])
    assert text.startswith("The following are multiple choice questions (with answers) about world history.\n\n")
    assert "dev q1\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n" in text and text.endswith("q0\nA. a\nB. b\nC. c\nD. d\nAnswer:")
    b = PromptBuilder(tok, PromptConfig(flavor="base"))
    # Answers: q0 → B, q1 → C, q2 → D in each subject; a model always saying B gets 1/3.
    res, items, _ = evaluate_mmlu(data, 5, b, PrefersLetter(tok, "B", tok.vocab.export_size))
    assert res["items"] == 6 and res["accuracy"] == pytest.approx(1 / 3)
    assert res["by_subject"]["astronomy"] == {"n": 3, "accuracy": pytest.approx(1 / 3)}
    assert all(len(b.request(it).candidates) == 4 for it in items)
    full = len(b.request(items[0]).context)
    short = mmlu_items(data, 5, b, max_tokens=full - 5)
    assert len(b.request(short[0]).context) < full - 5  # shots dropped to fit


def test_mmlu_errors_and_cli(mmlu_dir, hf_model_dir, tmp_path, capsys):
    from megatron_spirit.cli.eval import main

    out = tmp_path / "out"
    assert main(["mmlu", "--model", str(hf_model_dir), "--data", str(mmlu_dir), "--shots", "5", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"]["mmlu"]["items"] == 6 and "MMLU" in (out / "table.md").read_text()
    assert len((out / "items" / "mmlu.jsonl").read_text().splitlines()) == 6
    (mmlu_dir / "dev" / "astronomy_dev.csv").unlink()
    with pytest.raises(BenchmarkError, match="astronomy_dev.csv: the shots for astronomy are missing"):
        read_mmlu(mmlu_dir)
    _write(mmlu_dir, "astronomy", "dev", [["q", "a", "b", "c", "d", "E"]])
    with pytest.raises(BenchmarkError, match=r"astronomy_dev.csv:1: answer must be one of A B C D"):
        read_mmlu(mmlu_dir)
