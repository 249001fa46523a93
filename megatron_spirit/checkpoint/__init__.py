"""The checkpoint contract shared by the trainer and the converters (neither imports the other).

- :mod:`.folder`: the folder protocol (``iter_NNNNNNN``, temp names, ``COMPLETE``, ``latest``, keep-last-K) and
  :func:`.folder.resolve` (a checkpoint folder or a training root).
- :mod:`.checksums`: ``checksums.json`` (size + digest of every file, written before ``COMPLETE``), verified
  while a checkpoint is loaded or exported; :class:`.checksums.CorruptCheckpoint` names the damaged files.
- :mod:`.info`: the self-description (``spirit_checkpoint.json``, the ``tokenizer/`` copy).
- :mod:`.weights`: the model's sharded state, the one strict-load check, the weights-only load.
- :mod:`.state`: :class:`.state.TrainingState`, the typed non-tensor part of a training checkpoint.
- :mod:`.resume` and :mod:`.optimizer_state`: save/load of a whole training state (model, optimizer, RNG).

Loading a converted checkpoint (weights only, like Megatron's ``--finetune``)::

    from megatron_spirit.checkpoint.info import model_config_from_info, read_info
    from megatron_spirit.checkpoint.weights import load_weights
    model_cfg = model_config_from_info(read_info(ckpt_dir))  # sizes + rope_base of the converted model
    built = build_model(model_cfg, parallel_cfg, vocab_size=tokenizer.vocab.full_size, dtype="bf16")
    load_weights(built.chunks, ckpt_dir)                    # any TP/PP: megatron-core reshards on load

``build_model`` pads ``vocab_size`` to ``make_vocab_size_divisible_by × tp`` exactly as the converter did for
its ``--tp``; another padding still loads (megatron-core loads the overlapping embedding/output rows). A
converted checkpoint holds model weights only (no optimizer, no iteration): start the optimizer fresh. It also
holds the layers' ``_extra_state`` objects (as ``None``), so a request of the model's full sharded state dict
loads too.
"""
