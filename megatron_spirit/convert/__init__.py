"""Checkpoint conversion Hugging Face LLaMA(-2) ⇄ megatron-core distributed checkpoint (docs/spec.md §1, §4, §6).

- ``hf_to_megatron(hf_dir, tokenizer_dir, out_dir, tp, pp, model_cfg=None, rope_base=None, dtype=None, seed)``
- ``megatron_to_hf(ckpt_dir, out_dir, tokenizer_dir=None, model_cfg=None, dtype=None)``
- ``layout``: the tensor mapping (fused QKV per query group, ``[gate; up]`` fc1, vocab padding/trimming) — the
  one place that knows it.

The folder format both directions share with the trainer (self-description, weights-only load at any TP/PP) is
:mod:`megatron_spirit.checkpoint`.
"""
__all__ = ["hf_to_megatron", "megatron_to_hf"]


def __getattr__(name):  # keep `import megatron_spirit.convert` light (no megatron import)
    if name == "hf_to_megatron":
        from .hf_to_megatron import hf_to_megatron

        return hf_to_megatron
    if name == "megatron_to_hf":
        from .megatron_to_hf import megatron_to_hf

        return megatron_to_hf
    raise AttributeError(name)
