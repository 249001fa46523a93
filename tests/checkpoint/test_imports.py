"""The checkpoint contract's import rule: training and convert share ``checkpoint`` and never import each other."""
import ast
from pathlib import Path

import megatron_spirit

ROOT = Path(megatron_spirit.__file__).parent


def _imported_packages(package: str) -> set[str]:
    """Top-level megatron_spirit packages imported anywhere (function bodies too) by ``package``'s modules."""
    found = set()
    for path in (ROOT / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("megatron_spirit."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("megatron_spirit."))
    return found


def test_training_and_convert_meet_only_in_checkpoint():
    assert "convert" not in _imported_packages("training")
    assert "training" not in _imported_packages("convert")
    assert {"checkpoint"} <= _imported_packages("training") & _imported_packages("convert")
    assert not {"training", "convert", "cli"} & _imported_packages("checkpoint")
