"""Transcripts + CTC emissions → word times and a score per utterance (or the reason it cannot be aligned).

Word ``w`` spans from the first frame of its first token to the end of the last frame of its last token
(frame ``i`` starts at ``i * hop`` samples). The utterance ``score`` is the mean log-probability per frame of the
forced path (0 is certain; a transcript that does not match its audio scores low): ``--min-score`` rejects on it.
Utterances are aligned in padded batches whose trellis (frames × states, int8 backpointers) stays within
``max_trellis_bytes``; one utterance larger than that alone is rejected, not run out of memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .targets import Targets
from .viterbi import forced_align, min_frames, trellis_bytes


@dataclass(frozen=True)
class Aligned:
    words: tuple[str, ...]
    starts: np.ndarray  # seconds
    ends: np.ndarray
    word_scores: np.ndarray  # mean log-probability per frame inside each word
    score: float
    unknown: int  # characters aligned to the star token


class AlignReject(ValueError):
    """Why an utterance has no alignment; ``reason`` goes to the rejects file."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_alignable(targets: Targets, frames: int, max_trellis_bytes: int) -> None:
    """Raise :class:`AlignReject` for an empty transcript, one longer than the audio can hold, or a trellis over
    the budget."""
    if not targets.words:
        raise AlignReject("empty transcript")
    need = min_frames(list(targets.tokens))
    if frames < need:
        raise AlignReject(f"transcript longer than the audio can hold: {len(targets.tokens)} tokens need "
                          f"{need} frames, the audio has {frames}")
    if trellis_bytes(frames, len(targets.tokens)) > max_trellis_bytes:
        raise AlignReject(f"too long to align at once: {frames} frames x {2 * len(targets.tokens) + 1} states "
                          f"exceeds the trellis budget of {max_trellis_bytes / 2**30:.1f} GiB")


def align_emissions(emissions: Sequence[torch.Tensor], targets: Sequence[Targets], frame_seconds: float,
                    blank: int, max_trellis_bytes: int = 2 << 30) -> list[Aligned | AlignReject]:
    """Align each transcript to its emissions ((frames, columns) log-probabilities); padded batches by length."""
    out: list[Aligned | AlignReject | None] = [None] * len(targets)
    ok = []
    for i, (e, tg) in enumerate(zip(emissions, targets)):
        try:
            check_alignable(tg, e.shape[0], max_trellis_bytes)
            ok.append(i)
        except AlignReject as r:
            out[i] = r
    ok.sort(key=lambda i: -emissions[i].shape[0])
    group: list[int] = []
    for i in ok + [-1]:
        if group:
            t_max = emissions[group[0]].shape[0]
            s_max = max(len(targets[j].tokens) for j in group + ([i] if i >= 0 else []))
            if i < 0 or (len(group) + 1) * trellis_bytes(t_max, s_max) > max_trellis_bytes:
                for j, a in zip(group, _align_batch([emissions[j] for j in group], [targets[j] for j in group],
                                                    frame_seconds, blank)):
                    out[j] = a
                group = []
        if i >= 0:
            group.append(i)
    return out  # type: ignore[return-value]


def _align_batch(emissions: list[torch.Tensor], targets: list[Targets], frame_seconds: float,
                 blank: int) -> list[Aligned]:
    dev = emissions[0].device
    t_max = max(e.shape[0] for e in emissions)
    l_max = max(len(t.tokens) for t in targets)
    lp = torch.zeros(len(emissions), t_max, emissions[0].shape[1], dtype=torch.float32, device=dev)
    tg = torch.full((len(targets), l_max), blank, dtype=torch.long)
    for b, (e, t) in enumerate(zip(emissions, targets)):
        lp[b, : e.shape[0]] = e
        tg[b, : len(t.tokens)] = torch.tensor(t.tokens)
    paths = forced_align(lp, tg, torch.tensor([e.shape[0] for e in emissions]),
                         torch.tensor([len(t.tokens) for t in targets]), blank)
    result = []
    for path, t in zip(paths, targets):
        first, last = path.token_frames(len(t.tokens))
        spans = torch.tensor(t.word_tokens, dtype=torch.long, device=first.device)
        f0, f1 = first[spans[:, 0]], last[spans[:, 1]] + 1
        cum = torch.cat([torch.zeros(1, device=dev), torch.cumsum(path.frame_logp.double(), 0).float()])
        word_scores = ((cum[f1] - cum[f0]) / (f1 - f0).clamp(min=1)).cpu().numpy()
        result.append(Aligned(t.words, f0.cpu().numpy() * frame_seconds, f1.cpu().numpy() * frame_seconds,
                              word_scores, float(path.frame_logp.mean()), t.unknown))
    return result
