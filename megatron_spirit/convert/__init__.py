"""Checkpoint conversion Hugging Face LLaMA(-2) ⇄ megatron-core distributed checkpoint (SPEC §1, §4, §6).

- ``hf_to_megatron(hf_dir, tokenizer_dir, out_dir, tp, pp, model_cfg=None, rope_base=None, dtype=None, seed)``
- ``megatron_to_hf(ckpt_dir, out_dir, tokenizer_dir=None, model_cfg=None, dtype=None)``
- ``layout``: the tensor mapping and TP/PP split rules (fused QKV per query group, ``[gate; up]`` fc1, vocab
  padding/trimming) — the one place that knows them.

Loading a converted checkpoint in the trainer (weights only, like Megatron's ``--finetune``)::

    from megatron_spirit.convert import load_megatron_weights
    from megatron_spirit.convert.checkpoint_info import read_info, model_config_from_info
    info = read_info(ckpt_dir)                       # spirit_checkpoint.json written by hf-to-megatron
    model_cfg = model_config_from_info(info)         # sizes + rope_base (100000 by default) of the target
    built = build_model(model_cfg, parallel_cfg, vocab_size=tokenizer.vocab.full_size, dtype="bf16")
    load_megatron_weights(built.chunks, ckpt_dir)    # any TP/PP: megatron-core reshards on load (VPP chunks
                                                     # are requested the same way; not covered by tests)

``build_model`` pads ``vocab_size`` to ``make_vocab_size_divisible_by × tp`` exactly as the converter did for
its ``--tp``; another padding still loads (megatron-core loads the overlapping embedding/output rows). The
checkpoint holds model weights only (no optimizer, no iteration): start the optimizer fresh. It also holds the
layers' ``_extra_state`` objects (as ``None``), so a plain ``dist_checkpointing.load(model.sharded_state_dict())``
works too — that is what the trainer's ``checkpoint.finetune_from`` (``training.checkpoint.load_weights``) does,
and the conversion tests load through it.
"""
from .load import load_megatron_weights

__all__ = ["load_megatron_weights", "hf_to_megatron", "megatron_to_hf"]


def __getattr__(name):  # keep `import megatron_spirit.convert` light (no megatron import)
    if name == "hf_to_megatron":
        from .hf_to_megatron import hf_to_megatron

        return hf_to_megatron
    if name == "megatron_to_hf":
        from .megatron_to_hf import megatron_to_hf

        return megatron_to_hf
    raise AttributeError(name)
