"""Rank bodies for the GPU tests (``parallel.launch.run_ranks``): megatron-core and HF logits on one device."""
from __future__ import annotations

import torch


def _megatron_logits(ckpt: str, tokenizer: str, dtype: str, tokens: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits of ``ckpt`` (a converted folder or a training folder's newest checkpoint), computed
    in fp32 after loading the weights as stored (``dtype``)."""
    from megatron_spirit.checkpoint.folder import CheckpointDir
    from megatron_spirit.checkpoint.info import model_config_from_info, read_info
    from megatron_spirit.checkpoint.weights import load_weights
    from megatron_spirit.model.build import build_model
    from megatron_spirit.model.config import ParallelConfig
    from megatron_spirit.parallel.runtime import init_model_parallel
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    latest = CheckpointDir(ckpt).latest()
    info = read_info(latest if latest is not None else ckpt)
    pcfg = ParallelConfig()
    init_model_parallel(pcfg, seed=7)
    built = build_model(model_config_from_info(info), pcfg, vocab_size=SpiritTokenizer(tokenizer).vocab_size,
                        dtype=dtype, verbose=False)
    load_weights(built.chunks, ckpt)
    (model,) = built.chunks
    model = model.float().eval()
    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand_as(tokens)
    with torch.no_grad():
        return model(tokens, positions, None).float()


def megatron_and_hf_logits(pairs: dict, tokenizer: str) -> dict:
    """For each name → (megatron checkpoint, HF folder, stored dtype): logits of both on this rank's device."""
    from transformers import LlamaForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    out = {}
    start_hf = None
    for name, (ckpt, hf_dir, dtype) in pairs.items():
        hf = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa")
        hf = hf.to(device).eval()
        vocab = hf.config.vocab_size
        tokens = torch.randint(0, min(vocab, 600), (2, 32), generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            want = hf(tokens).logits.float()
        got = _megatron_logits(ckpt, tokenizer, dtype, tokens)[..., :vocab]
        r = {"device": str(got.device), "max_abs_diff": float((got - want).abs().max()),
             "logit_scale": float(want.abs().max()), "hf_vocab": vocab}
        if start_hf is None:
            start_hf = want[..., :600]
        else:
            r["changed_from_start"] = float((want[..., :600] - start_hf).abs().max())
        out[name] = r
    return out
