"""Hugging Face LLaMA(-2) folder → megatron-core distributed checkpoint with the SpiRit vocabulary.

What happens (docs/spec.md §1, §4): every input is checked first (config, tokenizer, every tensor's shape, the TP/PP
split) so that bad input fails before anything is written; then the checkpoint is written tensor by tensor
(``streaming_save``): each layer's Megatron tensors are computed from its HF tensors when the writer reaches
them. The embedding and output layer keep the original rows, get the SpiRit rows (random, seeded) and the
padding rows Megatron needs (``padded_vocab_size(tokenizer size, make_vocab_size_divisible_by, tp)``). The
RoPE base is the target config's (the recipe's 100,000): it is a model hyper-parameter, not a tensor, so it
is recorded in ``spirit_checkpoint.json`` with the rest of the config.

A checkpoint that is already SpiRit (a released SpiRit-LM, or this project's export: ``vocab_size`` equal to
the tokenizer's size, 32512 BASE / 32768 EXPRESSIVE) keeps every row as it is; only Megatron's padding rows are
added, and its RoPE base is its own ``rope_theta`` unless one is given.

The output folder (written atomically) is a standard megatron-core ``torch_dist`` checkpoint that loads and
reshards at any TP/PP (see ``checkpoint.weights.load_weights``), plus ``spirit_checkpoint.json`` and a copy of
the tokenizer in ``tokenizer/`` (``checkpoint.info``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint.info import describe
from ..model.config import DTYPES, RECIPE_ROPE_BASE, ModelConfig, check_dtype, dtype_name
from . import layout as L
from .hf_checkpoint import HFCheckpoint


@dataclass(frozen=True)
class ConversionPlan:
    """Everything decided (and checked) before writing."""

    model_cfg: ModelConfig
    tokenizer: object  # tokenizer.tokenizer.SpiritTokenizer
    padded_vocab: int
    dtype: torch.dtype
    tp: int
    pp: int


def model_config_from_hf(hf_config: dict, rope_base: float, source: str = "hf"):
    """A ModelConfig with the HF model's sizes and the given RoPE base."""
    def need(key):
        if key not in hf_config:
            raise ValueError(f"{source}/config.json has no {key!r}")
        return hf_config[key]

    heads = need("num_attention_heads")
    groups = hf_config.get("num_key_value_heads") or heads
    return ModelConfig(
        num_layers=need("num_hidden_layers"),
        hidden_size=need("hidden_size"),
        ffn_hidden_size=need("intermediate_size"),
        num_attention_heads=heads,
        num_query_groups=None if groups == heads else groups,
        seq_length=hf_config.get("max_position_embeddings", 4096),
        rope_base=float(rope_base),
        norm_eps=hf_config.get("rms_norm_eps", 1e-5),
        init_method_std=hf_config.get("initializer_range", 0.02),
        name=f"from:{Path(source).name}",
    )


def check_hf_config(hf: HFCheckpoint) -> None:
    cfg, where = hf.config, hf.folder / "config.json"
    if cfg.get("model_type", "llama") != "llama":
        raise ValueError(f"{where}: model_type {cfg.get('model_type')!r} is not 'llama'")
    if cfg.get("tie_word_embeddings", False):
        raise ValueError(f"{where}: tied input/output embeddings are not supported (LLaMA-2 does not tie them)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{where}: hidden_act {cfg.get('hidden_act')!r} is not 'silu' (SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"{where}: {key}=true is not supported (the model has no biases)")
    if cfg.get("rope_scaling"):
        raise ValueError(f"{where}: rope_scaling {cfg['rope_scaling']!r} is not supported")


def check_config_matches(hf: HFCheckpoint, model_cfg) -> None:
    """The named target config must have the checkpoint's sizes."""
    derived = model_config_from_hf(hf.config, model_cfg.rope_base, str(hf.folder))
    keys = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "query_groups", "norm_eps")
    diffs = [
        f"{k}: config {model_cfg.name!r} has {getattr(model_cfg, k)}, checkpoint has {getattr(derived, k)}"
        for k in keys
        if getattr(model_cfg, k) != getattr(derived, k)
    ]
    if diffs:
        raise ValueError(f"{hf.folder} does not match model config {model_cfg.name!r}: " + "; ".join(diffs))


def check_tensors(hf: HFCheckpoint, model_cfg: ModelConfig, vocab_rows: int) -> torch.dtype:
    """Every expected tensor is present with its shape (headers only); returns the checkpoint's dtype."""
    expected = L.hf_shapes(model_cfg, vocab_rows)
    present = set(hf.names)
    missing = [n for n in expected if n not in present]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ValueError(f"{hf.folder}: tensor(s) missing from the checkpoint: {', '.join(missing[:3])}{more}")
    # Old .bin checkpoints carry the rotary buffer; anything else unknown would be silently lost.
    unexpected = sorted(n for n in present if n not in expected and not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise ValueError(
            f"{hf.folder}: tensor(s) this LLaMA layout does not know (they would be lost): {', '.join(unexpected[:3])}"
        )
    bad = []
    for name, shape in expected.items():
        got, _ = hf.meta(name)
        if got != shape:
            bad.append(f"{name} has shape {list(got)}, expected {list(shape)}")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ValueError(f"{hf.folder}: shapes do not match the model config: {'; '.join(bad[:3])}{more}")
    return hf.meta(L.HF_EMBEDDING)[1]


def plan_conversion(hf: HFCheckpoint, tokenizer_dir, tp: int, pp: int, model_cfg=None,
                    rope_base: Optional[float] = None, dtype: Optional[str] = None) -> ConversionPlan:
    """All checks; raises ValueError/FileNotFoundError naming the file and the problem."""
    from ..model.config import ParallelConfig, padded_vocab
    from ..tokenizer.tokenizer import SpiritTokenizer

    check_hf_config(hf)
    model_cfg_given = model_cfg
    if model_cfg is None:
        model_cfg = model_config_from_hf(hf.config, rope_base or RECIPE_ROPE_BASE, str(hf.folder))
    else:
        check_config_matches(hf, model_cfg)
        if rope_base is not None:
            model_cfg = dataclasses.replace(model_cfg, rope_base=float(rope_base))
    ParallelConfig(tp=tp, pp=pp).check_model(model_cfg)

    tokenizer = SpiritTokenizer(tokenizer_dir)
    hf_vocab = hf.config.get("vocab_size")
    base, export = tokenizer.vocab.base_size, tokenizer.vocab_size
    if hf_vocab not in (base, export):
        raise ValueError(
            f"tokenizer {tokenizer_dir} ({tokenizer.flavor.upper()}: {base} base pieces, {export} in all) does not fit "
            f"the checkpoint {hf.folder} (vocab_size {hf_vocab}): a LLaMA checkpoint needs a tokenizer built from "
            f"its own tokenizer.model ({hf_vocab} base pieces), a SpiRit one the tokenizer of its flavor "
            f"({hf_vocab} pieces; spirit-make-tokenizer --base-model <its folder>)"
        )
    if hf_vocab == export and model_cfg_given is None and rope_base is None:
        # A SpiRit checkpoint continues as it was trained: its own RoPE base, not the recipe's default.
        theta = hf.config.get("rope_theta") or (hf.config.get("rope_parameters") or {}).get("rope_theta")
        if theta:
            model_cfg = dataclasses.replace(model_cfg, rope_base=float(theta))
    src_dtype = check_tensors(hf, model_cfg, hf_vocab)
    if src_dtype not in DTYPES.values():
        raise ValueError(f"{hf.folder}: weights are {src_dtype}; expected float32, bfloat16 or float16")
    out_dtype = check_dtype(dtype) if dtype is not None else src_dtype
    padded = padded_vocab(tokenizer.vocab_size, model_cfg, ParallelConfig(tp=tp))
    return ConversionPlan(model_cfg, tokenizer, padded, out_dtype, tp, pp)


class _Producer:
    """Computes the Megatron chunk the writer asks for from the HF tensors; caches one layer tensor."""

    def __init__(self, hf: HFCheckpoint, plan: ConversionPlan, seed: int, bar=None):
        self.hf, self.plan, self.seed, self.bar = hf, plan, seed, bar
        self._cache: tuple[tuple[str, int], torch.Tensor] | None = None

    def _full(self, key: str, layer: Optional[int]) -> torch.Tensor:
        tag = (key, -1 if layer is None else layer)
        if self._cache is not None and self._cache[0] == tag:
            return self._cache[1]
        self._cache = None
        if key in L.VOCAB_KEYS:
            weight = self.hf.get(L.HF_GLOBAL[key])
            tensor = L.extend_rows(weight, self.plan.padded_vocab, self.seed, L.VOCAB_SALT[key],
                                   self.plan.model_cfg.init_method_std)
        elif key == L.FINAL_NORM:
            tensor = self.hf.get(L.HF_FINAL_NORM)
        else:
            parts = [self.hf.get(L.hf_layer_name(layer, p)) for p in L.HF_LAYER_PARTS[key]]
            tensor = L.layer_to_megatron(key, parts, self.plan.model_cfg)
        tensor = tensor.to(self.plan.dtype)
        self._cache = (tag, tensor)
        return tensor

    def __call__(self, key: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
        layered = key in L.LAYER_KEYS
        layer = offsets[0] if layered else None
        if self.bar is not None:
            self.bar.set_postfix_str(f"layer {layer}" if layered else key.split(".")[0])
        full = self._full(key, layer)
        inner_off, inner_size = (offsets[1:], sizes[1:]) if layered else (offsets, sizes)
        index = tuple(slice(o, o + n) for o, n in zip(inner_off, inner_size))
        chunk = full[index]
        return chunk.unsqueeze(0) if layered else chunk


def megatron_sharded_state_dict(model_cfg: ModelConfig, vocab_rows: int, dtype: torch.dtype) -> dict:
    """The model's sharded state dict as GPTModel (TP1/PP1, fc1 factory applied) describes it, data-less."""
    from megatron.core.dist_checkpointing import ShardedObject

    from .streaming_save import meta_sharded_tensor

    shapes = L.megatron_shapes(model_cfg, vocab_rows)
    n = model_cfg.num_layers
    sd = {L.EMBEDDING: meta_sharded_tensor(L.EMBEDDING, shapes[L.EMBEDDING], dtype)}
    for key in L.LAYER_KEYS:
        for i in range(n):
            if key == L.FC1:  # megatron's swiglu factory: gate and up as two pieces of one key
                half = (shapes[key][0] // 2, shapes[key][1])
                sd[f"{key}.{i}.gate"] = meta_sharded_tensor(key, half, dtype, i, n, split=(0, 0, 2))
                sd[f"{key}.{i}.up"] = meta_sharded_tensor(key, half, dtype, i, n, split=(0, 1, 2))
            else:
                sd[f"{key}.{i}"] = meta_sharded_tensor(key, shapes[key], dtype, i, n)
    for key in L.EXTRA_STATE_KEYS:  # as megatron's make_sharded_object_for_checkpoint lays them out
        for i in range(n):
            sd[f"{key}.{i}"] = ShardedObject(key, None, (n,), (i,), replica_id=0)
    sd[L.FINAL_NORM] = meta_sharded_tensor(L.FINAL_NORM, shapes[L.FINAL_NORM], dtype)
    sd[L.OUTPUT] = meta_sharded_tensor(L.OUTPUT, shapes[L.OUTPUT], dtype)
    return sd


def hf_to_megatron(hf_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   tp: int = 1, pp: int = 1, model_cfg=None, rope_base: Optional[float] = None,
                   dtype: Optional[str] = None, seed: int = 1234, progress: bool = True) -> Path:
    """Convert; returns the output folder. ``model_cfg`` (a named ModelConfig) must match the checkpoint's sizes;
    without it the sizes come from the HF config and the RoPE base is ``rope_base`` (default: the recipe's
    100,000). ``dtype`` (fp32/bf16/fp16) defaults to the checkpoint's."""
    from megatron.core import dist_checkpointing
    from tqdm import tqdm

    from ..checkpoint.checksums import write_manifest
    from ..parallel.local_group import local_group
    from ..utils.atomic import atomic_dir
    from .streaming_save import streaming_strategy

    hf = HFCheckpoint(hf_dir)
    plan = plan_conversion(hf, tokenizer_dir, tp, pp, model_cfg, rope_base, dtype)
    sharded = megatron_sharded_state_dict(plan.model_cfg, plan.padded_vocab, plan.dtype)
    out_dir = Path(out_dir)
    with tqdm(total=len(sharded), desc="hf→megatron", unit="tensor", disable=not progress) as bar, \
            atomic_dir(out_dir) as tmp, local_group():
        produce = _Producer(hf, plan, seed, bar)
        dist_checkpointing.save(sharded, str(tmp), sharded_strategy=streaming_strategy(produce, lambda _: bar.update()))
        describe(tmp, plan.model_cfg, plan.tokenizer, plan.padded_vocab, dtype_name(plan.dtype),
                 extra={"converted_from": str(Path(hf_dir).resolve()), "seed": seed, "tp": tp, "pp": pp})
        write_manifest(tmp)  # the checksums every checkpoint folder carries (checkpoint.checksums)
    return out_dir
