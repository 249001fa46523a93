"""The shipped configs and the trainer's config rules (no processes started)."""
from pathlib import Path

import pytest

from megatron_spirit.training.config import load_train_config
from megatron_spirit.utils.config_io import to_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: Every field of the 7B flavors as the repeated-recipe YAMLs resolved them before the shared
#: configs/spiritlm_7b.yaml existed: the unchanged-behaviour check for the include/defaults split.
RECIPE_7B = {
    "model": {"name": "spirit-7b", "seq_length": 4096},
    "parallel": {"tp": 2, "pp": 1, "vpp": None, "sp": True, "distributed_optimizer": True,
                 "overlap_grad_reduce": True, "overlap_param_gather": True, "recompute": None},
    "optimizer": {"lr": 3e-05, "min_lr": 3e-05, "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.95,
                  "adam_eps": 1e-08, "clip_grad": 1.0},
    "schedule": {"train_steps": 200000, "global_batch_size": 256, "micro_batch_size": 4, "lr_schedule": "constant",
                 "warmup_steps": 0, "decay_steps": None, "eval_interval": 1000, "eval_steps": 10},
    "evaluation": {"subset_validation": True, "tasks": "", "data": [], "interval": 0},
    "precision": "bf16",
    "seed": 1234,
}


def _flavor(flavor: str) -> dict:
    return {
        **RECIPE_7B,
        "data": {"tokenizer": f"/path/to/spirit_tokenizer_{flavor}", "blend": f"/path/to/blend_{flavor}.json",
                 "prefixes": [], "split": "98,2,0", "cache_dir": "/path/to/dataset_cache", "eod_mask_loss": False,
                 "reset_position_ids": False, "reset_attention_mask": False, "num_workers": 0, "seed": None},
        "checkpoint": {"dir": f"/path/to/checkpoints/spiritlm_{flavor}_7b", "save_interval": 1000, "keep_last": 3,
                       "finetune_from": f"/path/to/llama2_7b_spirit_{flavor}_megatron", "save_on_exit": True,
                       "fallback": True},
        "logging": {"dir": f"/path/to/logs/spiritlm_{flavor}_7b", "log_interval": 10, "tensorboard": True,
                    "plot_loss": True},
    }


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_7b_flavors_resolve_to_the_recipe_unchanged(flavor):
    got = to_dict(load_train_config(str(CONFIGS / f"spiritlm_{flavor}_7b.yaml")))
    want = _flavor(flavor)
    assert sorted(got) == sorted(want)
    for section, value in want.items():
        assert got[section] == value, section


def test_7b_flavor_overrides_win_over_the_shared_file():
    cfg = load_train_config(str(CONFIGS / "spiritlm_expressive_7b.yaml"), ["parallel.tp=4", "schedule.eval_interval=0"])
    assert (cfg.parallel.tp, cfg.parallel.sp, cfg.schedule.eval_interval) == (4, True, 0)


def test_tiny_cpu_config_loads_with_overrides():
    cfg = load_train_config(str(CONFIGS / "tiny_cpu.yaml"), ["schedule.train_steps=4", "data.blend=/x/blend.json"])
    assert cfg.model_config.num_layers > 0 and cfg.parallel.tp == 2 and cfg.precision == "fp32"
    assert cfg.schedule.train_steps == 4 and cfg.data.blend == "/x/blend.json"


@pytest.mark.parametrize("override, error", [
    (["evaluation.tasks=swuggy:T"], "give both evaluation.tasks and evaluation.interval"),
    (["evaluation.interval=5"], "give both evaluation.tasks and evaluation.interval"),
    (["evaluation.tasks=swuggy:T", "evaluation.interval=5", "evaluation.data=units/swuggy"], "is not BENCH=DIR"),
])
def test_evaluation_section_errors_name_the_key(override, error):
    from megatron_spirit.utils.config_io import ConfigError

    with pytest.raises(ConfigError, match=error):
        load_train_config(str(CONFIGS / "tiny_cpu.yaml"), override)


@pytest.mark.parametrize("override, seed", [([], 1234), (["seed=7"], 7), (["data.seed=0"], 0), (["data.seed=5"], 5)])
def test_data_seed_none_means_the_run_seed_and_zero_is_zero(override, seed):
    cfg = load_train_config(str(CONFIGS / "tiny_cpu.yaml"), override)
    assert cfg.data_seed == seed
