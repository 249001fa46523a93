"""Typed YAML configs: nested dataclasses, overrides, errors that name the key."""
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from megatron_spirit.utils.config_io import ConfigError, apply_overrides, dump_yaml, from_dict, load_config


@dataclass(frozen=True)
class Opt:
    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.95)
    kind: Literal["adam", "sgd"] = "adam"


@dataclass(frozen=True)
class Cfg:
    name: str = "x"
    steps: int = 10
    bf16: bool = False
    tp: Optional[int] = None
    paths: list[str] = field(default_factory=list)
    opt: Opt = field(default_factory=Opt)

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError("steps must be positive")


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run\nopt:\n  lr: 1.0e-4\n  betas: [0.8, 0.9]\npaths: [a, b]\n")
    c = load_config(Cfg, p, ["opt.kind=sgd", "steps=7", "bf16=true", "tp=2"])
    assert c == Cfg("run", 7, True, 2, ["a", "b"], Opt(1e-4, (0.8, 0.9), "sgd"))
    assert load_config(Cfg, None, []) == Cfg()
    assert from_dict(Cfg, yaml_round := __import__("yaml").safe_load(dump_yaml(c))) == c, yaml_round


@pytest.mark.parametrize(
    "overrides, msg",
    [
        (["opt.lrr=1"], "unknown config key 'opt.lrr'"),
        (["stepz=1"], "unknown config key 'stepz'"),
        (["steps=abc"], "steps: expected an integer"),
        (["opt.kind=rmsprop"], "opt.kind: 'rmsprop' is not one of"),
        (["opt.betas=[1]"], r"opt.betas: expected 2 items"),
        (["steps=0"], "steps must be positive"),
        (["bf16=maybe"], "bf16: expected true/false"),
        (["noequals"], "not of the form key=value"),
    ],
)
def test_errors_name_the_key(overrides, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Cfg, None, overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Cfg, bad)


def test_apply_overrides_nested():
    assert apply_overrides({"a": {"b": 1}}, ["a.c.d=3", "a.b=2"]) == {"a": {"b": 2, "c": {"d": 3}}}


def test_include_deep_merges_relative_to_the_including_file(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "a.yaml").write_text("name: a\nsteps: 3\nopt: {lr: 1.0e-3, kind: sgd}\npaths: [x, y]\n")
    (tmp_path / "shared" / "b.yaml").write_text("include: a.yaml\nsteps: 5\nopt: {lr: 2.0e-3}\n")
    (tmp_path / "c.yaml").write_text("include: [shared/b.yaml]\nopt: {betas: [0.8, 0.9]}\npaths: [z]\ntp: null\n")
    c = load_config(Cfg, tmp_path / "c.yaml", ["steps=6"])
    # later files win key by key; lists are replaced, not appended; overrides win over every file
    assert c == Cfg("a", 6, False, None, ["z"], Opt(2e-3, (0.8, 0.9), "sgd"))
    assert load_config(Cfg, tmp_path / "shared" / "b.yaml").steps == 5


def test_include_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"include cycle: .*a\.yaml → .*b\.yaml → .*a\.yaml"):
        load_config(Cfg, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("include: [gone.yaml]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: included config file not found: .*gone\.yaml"):
        load_config(Cfg, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("include: {x: 1}\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: include must be a file path or a list"):
        load_config(Cfg, tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("include: a.yaml\nstepz: 1\n")
    (tmp_path / "a.yaml").write_text("steps: 2\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: unknown config key 'stepz'"):
        load_config(Cfg, tmp_path / "e.yaml")
