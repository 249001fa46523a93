"""CTC Viterbi forced alignment, batched over utterances (torch; runs on the emissions' device).

Semantics of ``torchaudio.functional.forced_align`` (which is not available here): the trellis runs over the
blank-interleaved targets ``blank t1 blank t2 … blank`` (state ``2k + 1`` is target ``k``), a state is entered from
itself, the state before, or two before when that skips a blank between two different tokens; the path ends on
the last token or the final blank. Ties prefer staying, then the shorter jump, and ending on the last token.
The loop runs over time only: every step is a few tensor ops over (batch, states). Backpointers are int8
(batch × frames × states bytes), which bounds what one call may hold (see :func:`trellis_bytes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


def min_frames(targets: list[int]) -> int:
    """Frames a CTC path needs for ``targets``: one per token plus a blank between equal neighbours."""
    return len(targets) + sum(1 for a, b in zip(targets, targets[1:]) if a == b)


def trellis_bytes(frames: int, tokens: int) -> int:
    return frames * (2 * tokens + 1)


@dataclass(frozen=True)
class Path:
    """One utterance's best path: the trellis state of every frame (``2k + 1`` = target ``k``, even = blank) and
    the log-probability the path takes at every frame."""

    states: torch.Tensor  # (T,) int64
    frame_logp: torch.Tensor  # (T,) float

    def token_frames(self, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last frame of each target token (every token holds ≥ 1 frame on a CTC path)."""
        st = self.states
        tok = torch.where(st % 2 == 1, st // 2, torch.full_like(st, num_tokens))
        t = torch.arange(len(st), device=st.device)
        first = torch.full((num_tokens + 1,), len(st), dtype=torch.int64, device=st.device)
        last = torch.full((num_tokens + 1,), -1, dtype=torch.int64, device=st.device)
        first.scatter_reduce_(0, tok, t, "amin")
        last.scatter_reduce_(0, tok, t, "amax")
        return first[:num_tokens], last[:num_tokens]


def forced_align(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                 target_lengths: torch.Tensor, blank: int = 0) -> list[Path]:
    """Best CTC paths of a padded batch.

    ``log_probs`` (B, T, C) log-softmax emissions, ``targets`` (B, L) token ids (padding anything), lengths (B,).
    Every utterance needs ``input_lengths[b] >= min_frames(targets[b])``; the caller rejects the others.
    """
    dev = log_probs.device
    B, T, _ = log_probs.shape
    L = targets.shape[1]
    S = 2 * L + 1
    in_len = input_lengths.to(dev).long()
    tgt_len = target_lengths.to(dev).long()
    if B == 0:
        return []
    if torch.any(in_len < 1) or torch.any(in_len > T) or torch.any(tgt_len > L):
        raise ValueError("forced_align: lengths outside the padded tensors")
    ext = torch.full((B, S), blank, dtype=torch.long, device=dev)
    ext[:, 1::2] = targets.to(dev).long()
    s_idx = torch.arange(S, device=dev)
    valid = s_idx[None, :] < (2 * tgt_len + 1)[:, None]
    ext = torch.where(valid, ext, torch.full_like(ext, blank))
    prev2 = torch.roll(ext, 2, dims=1)
    skip = (s_idx[None, :] % 2 == 1) & (s_idx[None, :] >= 2) & (ext != prev2) & valid

    neg = torch.tensor(NEG_INF, dtype=log_probs.dtype, device=dev)
    v = torch.full((B, S), NEG_INF, dtype=log_probs.dtype, device=dev)
    e0 = log_probs[:, 0].gather(1, ext)
    v[:, 0] = e0[:, 0]
    v[:, 1] = torch.where(tgt_len > 0, e0[:, 1], neg)
    v = torch.where(valid, v, neg)
    bp = torch.zeros((B, T, S), dtype=torch.int8, device=dev)
    pad = torch.full((B, 2), NEG_INF, dtype=log_probs.dtype, device=dev)
    for t in range(1, T):
        vp = torch.cat([pad, v], dim=1)
        one = vp[:, 1:-1]
        two = torch.where(skip, vp[:, :-2], neg)
        best, arg = torch.stack([v, one, two]).max(dim=0)  # ties: the first (stay) wins
        bp[:, t] = arg.to(torch.int8)
        new = torch.where(valid, best + log_probs[:, t].gather(1, ext), neg)
        v = torch.where((t < in_len)[:, None], new, v)

    last_tok = (2 * tgt_len - 1).clamp(min=0)
    final_blank = 2 * tgt_len
    v_tok = v.gather(1, last_tok[:, None])[:, 0]
    v_blank = v.gather(1, final_blank[:, None])[:, 0]
    cur = torch.where((tgt_len > 0) & (v_tok >= v_blank), last_tok, final_blank)
    states = torch.zeros((B, T), dtype=torch.long, device=dev)
    for t in range(T - 1, -1, -1):
        live = t < in_len
        states[:, t] = cur
        if t > 0:
            step = bp[:, t].gather(1, cur[:, None])[:, 0].long()
            cur = torch.where(live, cur - step, cur)
    labels = ext.gather(1, states)
    logp = log_probs.gather(2, labels[:, :, None])[:, :, 0]
    return [Path(states[b, : int(in_len[b])], logp[b, : int(in_len[b])]) for b in range(B)]
