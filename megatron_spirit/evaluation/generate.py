"""Generate a continuation in one modality, as SpiRit-LM's release does: a text continuation may only emit
text tokens, a speech continuation only the flavor's unit tokens (docs/spec.md §1-§3). Works on any exported
Hugging Face folder (stock ``transformers``), so it also checks that the export is usable.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..tokenizer.vocab import SpiritVocab


def allowed_ids(vocab: SpiritVocab, modality: Literal["text", "speech"]) -> torch.Tensor:
    """Ids a continuation in ``modality`` may produce (EOS included; markers and BOS excluded)."""
    if modality == "text":
        ids = [i for i in range(vocab.base_size) if i not in (0, 1)]  # no <unk>, no <s>
    elif modality == "speech":
        ids = [2] + [vocab.stream_offset(s) + u for s in vocab.streams for u in range(s.count)]
    else:
        raise ValueError(f"modality must be 'text' or 'speech', got {modality!r}")
    return torch.tensor(ids, dtype=torch.long)


class ModalityMask:
    """A transformers LogitsProcessor that keeps only one modality's tokens."""

    def __init__(self, allowed: torch.Tensor, vocab_rows: int):
        self.mask = torch.full((vocab_rows,), float("-inf"))
        self.mask[allowed[allowed < vocab_rows]] = 0.0

    def __call__(self, input_ids, scores):
        return scores + self.mask[: scores.shape[-1]].to(scores.device, scores.dtype)


def generate(model, tokenizer, vocab: SpiritVocab, prompt: str, modality: Literal["text", "speech"],
             max_new_tokens: int = 30, seed: int = 0, do_sample: bool = True, top_k: int = 50) -> str:
    """The continuation (decoded, without the prompt) of ``prompt`` in ``modality``."""
    from transformers import LogitsProcessorList

    torch.manual_seed(seed)
    marker = "[Text]" if modality == "text" else "[Speech]"
    if not prompt.rstrip().endswith(marker) and modality == "speech" and "[Speech]" not in prompt:
        prompt = prompt + marker
    enc = tokenizer(prompt, return_tensors="pt")
    rows = model.get_output_embeddings().weight.shape[0]
    processors = LogitsProcessorList([ModalityMask(allowed_ids(vocab, modality), rows)])
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample, top_k=top_k,
                             logits_processor=processors, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
