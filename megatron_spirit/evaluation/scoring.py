"""Log-likelihood of candidate continuations (docs/spec.md §5): the one scoring rule, and the fast ways to run it.

A request is a context (token ids, starting with ``<s>``) and candidates (the hypothesis ids). A candidate's
score is the sum over its tokens of ``log p(token | context, earlier candidate tokens)``, with log-softmax over
the model's full output vocabulary as the release does (or, as an option, over the candidate's modality only);
the token count is kept so that the token-normalised score (Table 4) and the plain sum (Table 10) both follow.

Three ways to run it, all giving the naive loop's numbers:

* **shared context**: the context and all of its candidates go in one row; each candidate attends to the context
  and to itself only, and its positions continue from the context's end, so the context is computed once;
* **packing**: several requests share a row with document-masked attention (block-diagonal causal mask, position
  ids restarting per document);
* **length batching**: rows of similar length are batched up to a token budget.

The model is reached through a *logits function* (:class:`LogitsFn`) over packed rows, so a megatron-core
GPTModel forward can replace the Hugging Face one (:mod:`.hf`) without touching this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch


class LogitsFn(Protocol):
    """Logits at selected positions of a batch of packed rows.

    ``ids`` and ``positions`` are ``[B, L]`` long tensors; ``allowed`` is ``[B, L, L]`` bool (query attends to
    key); ``rows``/``cols`` ``[N]`` pick the positions whose next-token logits are returned as ``[N, V]``.
    """

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor: ...


class ItemSharding(Protocol):
    """Data parallelism over requests, for a logits function that has it as ``.sharding`` (:mod:`.megatron`).

    Rank ``rank`` of ``size`` scores every ``size``-th request; ``gather`` returns every rank's list of scores
    (in rank order), each taken from a process that holds real logits (with pipeline parallelism the others,
    rank 0 among them, only take part in the forward).
    """

    rank: int
    size: int

    def gather(self, part: list) -> list[list]: ...


@dataclass(frozen=True)
class Request:
    """One item to score: a shared context and its candidate hypotheses (token ids)."""

    context: tuple[int, ...]
    candidates: tuple[tuple[int, ...], ...]
    #: Per candidate, the token ids the softmax runs over (None: the full vocabulary, the release's rule).
    support: tuple[tuple[int, ...] | None, ...] | None = None

    def __post_init__(self):
        if not self.context:
            raise ValueError("a request needs a non-empty context (at least <s>): the first hypothesis token "
                             "has to be predicted from something")
        if not self.candidates:
            raise ValueError("a request needs at least one candidate")
        for j, c in enumerate(self.candidates):
            if not c:
                raise ValueError(f"candidate {j} is empty: nothing to score")


@dataclass(frozen=True)
class CandidateScore:
    """Summed log-probability of a candidate's tokens and how many there were."""

    logprob: float
    tokens: int

    @property
    def normalised(self) -> float:
        return self.logprob / self.tokens


@dataclass(frozen=True)
class PackingConfig:
    """How requests are laid out in model rows; every setting gives the same scores (within fp rounding)."""

    #: Put a request's context and all its candidates in one row (context computed once).
    share_context: bool = True
    #: Put several requests in one row with document-masked attention.
    pack: bool = True
    #: Longest packed row (tokens); a single request longer than this gets a row of its own. Short: the document
    #: mask is dense, so attention costs grow with the row's square (measured on CPU: 512 beat 2048 on both
    #: benchmark shapes, benchmarks/bench_eval.py).
    row_tokens: int = 512
    #: Padded tokens per forward (rows × longest row in the batch).
    batch_tokens: int = 8192


@dataclass
class _Unit:
    """What goes into a row together: one context and some of its candidates."""

    request: int
    cands: list[int]
    length: int


def _units(requests: Sequence[Request], share: bool) -> list[_Unit]:
    out = []
    for r, req in enumerate(requests):
        if share:
            out.append(_Unit(r, list(range(len(req.candidates))), len(req.context) + sum(map(len, req.candidates))))
        else:
            out += [_Unit(r, [j], len(req.context) + len(c)) for j, c in enumerate(req.candidates)]
    return out


def _rows(units: list[_Unit], cfg: PackingConfig) -> list[list[_Unit]]:
    """First-fit decreasing into rows of ``row_tokens`` (one unit per row without packing)."""
    order = sorted(units, key=lambda u: -u.length)
    if not cfg.pack:
        return [[u] for u in order]
    rows: list[list[_Unit]] = []
    fill: list[int] = []
    for u in order:
        for i, used in enumerate(fill):
            if used + u.length <= cfg.row_tokens:
                rows[i].append(u)
                fill[i] += u.length
                break
        else:
            rows.append([u])
            fill.append(u.length)
    return rows


def _batches(rows: list[list[_Unit]], budget: int) -> list[list[list[_Unit]]]:
    """Rows of similar length (longest first) grouped while rows × longest stays within ``budget``."""
    rows = sorted(rows, key=lambda r: -sum(u.length for u in r))
    out: list[list[list[_Unit]]] = []
    for row in rows:
        if out and (len(out[-1]) + 1) * sum(u.length for u in out[-1][0]) <= budget:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _layout(batch: list[list[_Unit]], requests: Sequence[Request]):
    """Tensors of one batch, and where each candidate token's prediction sits.

    A token may attend to an earlier token of the same unit (document) that is in the context or in its own
    candidate (branch). Padding is its own document, so no row is ever fully masked.
    """
    width = max(sum(u.length for u in row) for row in batch)
    B = len(batch)
    ids = torch.zeros(B, width, dtype=torch.long)
    pos = torch.zeros(B, width, dtype=torch.long)
    doc = torch.arange(width).repeat(B, 1) + 1_000_000  # padding: one document per token
    branch = torch.zeros(B, width, dtype=torch.long)
    picks = []  # (request, candidate, batch row, predicting column for each token, target ids)
    for b, row in enumerate(batch):
        t = 0
        for d, u in enumerate(row):
            req = requests[u.request]
            c = len(req.context)
            ids[b, t:t + c] = torch.tensor(req.context)
            pos[b, t:t + c] = torch.arange(c)
            doc[b, t:t + c] = d
            ctx_last = t + c - 1
            t += c
            for j in u.cands:
                cand = req.candidates[j]
                n = len(cand)
                ids[b, t:t + n] = torch.tensor(cand)
                pos[b, t:t + n] = torch.arange(c, c + n)
                doc[b, t:t + n] = d
                branch[b, t:t + n] = j + 1
                cols = [ctx_last] + list(range(t, t + n - 1))
                picks.append((u.request, j, b, cols, cand))
                t += n
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_doc = doc[:, :, None] == doc[:, None, :]
    branch_ok = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    allowed = causal[None] & same_doc & branch_ok
    return ids, pos, allowed, picks


def _log_probs(logits: torch.Tensor, targets: torch.Tensor, support: tuple[int, ...] | None) -> torch.Tensor:
    logits = logits.float()
    if support is None:
        norm = torch.logsumexp(logits, dim=-1)
    else:
        sup = torch.tensor(support, dtype=torch.long, device=logits.device)
        if not torch.isin(targets, sup).all():
            raise ValueError("a hypothesis token lies outside the softmax support given for it")
        norm = torch.logsumexp(logits[:, sup], dim=-1)
    return logits.gather(1, targets[:, None]).squeeze(1) - norm


@torch.no_grad()
def score_requests(requests: Sequence[Request], logits_fn: LogitsFn, cfg: PackingConfig = PackingConfig(),
                   device: torch.device | str = "cpu", progress=None) -> list[list[CandidateScore]]:
    """Every candidate's score, request by request (in the input order)."""
    sharding: ItemSharding | None = getattr(logits_fn, "sharding", None)
    if sharding is not None:
        parts = sharding.gather(_score_all(list(requests[sharding.rank::sharding.size]), logits_fn, cfg, device,
                                           progress))
        out: list = [None] * len(requests)
        for r, part in enumerate(parts):
            out[r::sharding.size] = part
        return out
    return _score_all(requests, logits_fn, cfg, device, progress)


def _score_all(requests: Sequence[Request], logits_fn: LogitsFn, cfg: PackingConfig, device,
               progress) -> list[list[CandidateScore]]:
    out: list[list[CandidateScore | None]] = [[None] * len(r.candidates) for r in requests]
    batches = _batches(_rows(_units(requests, cfg.share_context), cfg), cfg.batch_tokens)
    for batch in batches:
        ids, pos, allowed, picks = _layout(batch, requests)
        rows = torch.tensor([b for _, _, b, cols, _ in picks for _ in cols], dtype=torch.long)
        cols = torch.tensor([c for _, _, _, cs, _ in picks for c in cs], dtype=torch.long)
        logits = logits_fn(ids.to(device), pos.to(device), allowed.to(device), rows.to(device), cols.to(device))
        start = 0
        for r, j, _, cs, cand in picks:
            n = len(cs)
            sup = requests[r].support[j] if requests[r].support is not None else None
            lp = _log_probs(logits[start:start + n], torch.tensor(cand, device=logits.device), sup)
            out[r][j] = CandidateScore(float(lp.double().sum()), n)
            start += n
        if progress is not None:
            progress(sum(len(p[3]) for p in picks))
    return out  # type: ignore[return-value]


@torch.no_grad()
def naive_scores(requests: Sequence[Request], model, device: torch.device | str = "cpu") -> list[list[CandidateScore]]:
    """The reference: one plain forward of a Hugging Face causal LM per candidate (context + candidate)."""
    out = []
    for req in requests:
        scores = []
        for j, cand in enumerate(req.candidates):
            ids = torch.tensor([list(req.context) + list(cand)], device=device)
            logits = model(input_ids=ids).logits[0, len(req.context) - 1:-1]
            sup = req.support[j] if req.support is not None else None
            lp = _log_probs(logits, torch.tensor(cand, device=logits.device), sup)
            scores.append(CandidateScore(float(lp.double().sum()), len(cand)))
        out.append(scores)
    return out
