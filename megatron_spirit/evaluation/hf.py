"""The Hugging Face side of the scorer: a :class:`~.scoring.LogitsFn` over a stock ``LlamaForCausalLM``.

The packed rows' attention goes in as a 4D *additive float* mask (0 where allowed, the dtype's minimum
elsewhere) with explicit position ids. Measured on transformers 5.24: a float mask gives the unpacked logits
under both ``sdpa`` and ``eager`` attention, while a 4D *bool* mask is right under ``sdpa`` but silently wrong
under ``eager`` — hence float. Rows without a mask (``allowed`` None: one sequence per row, right-padded, positions
running on through the padding) go in with no mask at all, so transformers takes SDPA's causal kernel. The LM head
runs only at the positions asked for (``head``, which the scorer calls in chunks).
"""
from __future__ import annotations

from pathlib import Path

import torch


class HFLogits:
    """Next-token logits of selected positions of packed rows, from a loaded causal LM."""

    def __init__(self, model):
        self.model = model.eval()
        self.decoder = model.get_decoder()
        self.head_layer = model.get_output_embeddings()
        self.dtype = next(model.parameters()).dtype

    @property
    def vocab_rows(self) -> int:
        return int(self.head_layer.weight.shape[0])

    def hidden(self, ids, positions, allowed, rows, cols):
        """Final hidden states at the selected positions (``allowed`` None: plain causal, no mask built)."""
        mask = None
        if allowed is not None:
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device)
            mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
            mask = mask[:, None]
        hidden = self.decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                              use_cache=False).last_hidden_state
        return hidden[rows, cols]

    def head(self, states):
        return self.head_layer(states)

    def __call__(self, ids, positions, allowed, rows, cols):
        return self.head(self.hidden(ids, positions, allowed, rows, cols))


def load_hf_model(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """A local exported folder as a causal LM in eval mode (fp32 on CPU unless told)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected an exported Hugging Face model folder)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model.to(device).eval()
