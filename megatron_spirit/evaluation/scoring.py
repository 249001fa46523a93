"""Log-likelihood of candidate continuations (docs/spec.md §5): the one scoring rule, and the fast ways to run it.

A request is a context (token ids, starting with ``<s>``) and candidates (the hypothesis ids). A candidate's
score is the sum over its tokens of ``log p(token | context, earlier candidate tokens)``, with log-softmax over
the model's full output vocabulary as the release does (or, as an option, over the candidate's modality only);
the token count is kept so that the token-normalised score (Table 4) and the plain sum (Table 10) both follow.

Three ways to run it, all giving the naive loop's numbers:

* **shared context** (when it saves work: :class:`PackingConfig`): the context and all of its candidates go in one
  row; each candidate attends to the context and to itself only, and its positions continue from the context's
  end, so the context is computed once (its keys and values serve every candidate);
* **length batching**: rows of similar length are batched up to a token budget (little padding); a batch of plain
  rows (one context, one candidate each) goes in with no mask, as plain causal attention;
* **packing** (an option, off by default): several requests share a row with document-masked attention
  (block-diagonal causal mask, position ids restarting per document).

The LM head and the log-softmax run only at the scored positions, once per distinct position (a shared context's
last position predicts every candidate's first token), in chunks of ``head_tokens`` rows.

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
    key), or None for plain causal attention (each row one sequence, right-padded, positions ``0…L-1``);
    ``rows``/``cols`` ``[N]`` pick the positions whose next-token logits are returned as ``[N, V]``.

    A logits function may also offer ``hidden(ids, positions, allowed, rows, cols) -> [N, H]`` and
    ``head(h) -> [n, V]``: the scorer then runs the LM head in chunks (bounded memory).
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
    """How requests are laid out in model rows; every setting gives the same scores (within fp rounding).

    The defaults are the fastest layout measured (``benchmarks/bench_eval.py``, README "Evaluation"): a request's
    context is shared by its candidates when that saves real work, otherwise each candidate is its own row; rows
    are batched by length (little padding) and, when every row of a batch is one plain sequence, go in with no
    mask at all (causal attention, the fused kernel). Packing several requests into one row needs a dense document
    mask, whose attention cost grows with the row's square and which keeps the fused causal kernels out: on CPU it
    was slower than length batching on both benchmark shapes, hence off by default.
    """

    #: Put a request's context and all its candidates in one row, so the context is computed once (the
    #: candidates then need a branch mask). None (default): only when that saves at least ``share_min_tokens``
    #: tokens, i.e. ``(candidates - 1) * len(context)``: sWUGGY's ``<s>[Speech]`` is not worth a mask,
    #: a StoryCloze story or an MMLU prompt is (one forward per question).
    share_context: bool | None = None
    share_min_tokens: int = 16
    #: Put several requests in one row with document-masked attention (see above: off by default).
    pack: bool = False
    #: Longest packed row (tokens); a single request longer than this gets a row of its own.
    row_tokens: int = 512
    #: Padded tokens per forward (rows × longest row in the batch).
    batch_tokens: int = 8192
    #: A batch takes rows down to ``(1 - max_padding)`` × its longest, so padding stays under that share: the
    #: linear layers run on padding too (on sWUGGY-shaped items, one batch of everything padded ~30 %).
    max_padding: float = 0.125
    #: Scored positions per LM-head chunk (when the logits function offers ``hidden``/``head``): the [N, V]
    #: logits and their log-softmax stay within ``head_tokens × V`` floats. None: on CPU ``2**22 // V`` rows (a
    #: 16 MiB block, which stays in cache through the log-softmax: measured with the 32768-row vocabulary, 512
    #: rows ran 1.2-2× slower than 64-128, 16 rows starved the product), elsewhere 2048.
    head_tokens: int | None = None

    def head_rows(self, vocab: int, device) -> int:
        if self.head_tokens is not None:
            return self.head_tokens
        return max(32, 2**22 // vocab) if torch.device(device).type == "cpu" else 2048


@dataclass
class _Unit:
    """What goes into a row together: one context and some of its candidates."""

    request: int
    cands: list[int]
    length: int


def _shares(req: Request, cfg: PackingConfig) -> bool:
    if cfg.share_context is not None:
        return cfg.share_context
    return (len(req.candidates) - 1) * len(req.context) >= cfg.share_min_tokens


def _units(requests: Sequence[Request], cfg: PackingConfig) -> list[_Unit]:
    out = []
    for r, req in enumerate(requests):
        if _shares(req, cfg):
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


def _batches(rows: list[list[_Unit]], budget: int, max_padding: float = 1.0) -> list[list[list[_Unit]]]:
    """Rows of similar length (longest first) grouped while rows × longest stays within ``budget`` and no row is
    shorter than ``(1 - max_padding)`` × the longest."""
    rows = sorted(rows, key=lambda r: -sum(u.length for u in r))
    out: list[list[list[_Unit]]] = []
    for row in rows:
        longest = sum(u.length for u in out[-1][0]) if out else 0
        if out and (len(out[-1]) + 1) * longest <= budget and \
                sum(u.length for u in row) >= (1 - max_padding) * longest:
            out[-1].append(row)
        else:
            out.append([row])
    return out


@dataclass
class _Layout:
    """One batch's tensors and, per scored token, where its prediction sits and which candidate it counts for."""

    ids: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B, L]
    allowed: torch.Tensor | None  # [B, L, L], or None: plain causal rows (right padding only)
    rows: torch.Tensor  # [N]
    cols: torch.Tensor  # [N]
    targets: torch.Tensor  # [N]
    segment: torch.Tensor  # [N]: index into ``cands``
    cands: list[tuple[int, int]]  # (request, candidate) per segment


def _layout(batch: list[list[_Unit]], requests: Sequence[Request]) -> _Layout:
    """Tensors of one batch, and where each candidate token's prediction sits.

    A token may attend to an earlier token of the same unit (document) that is in the context or in its own
    candidate (branch). Padding is its own document, so no row is ever fully masked. When every row holds one
    context and one candidate, causal attention is exactly that rule: no mask is built and the positions run on
    through the padding (so nothing downstream mistakes the padding for a packed document).
    """
    width = max(sum(u.length for u in row) for row in batch)
    B = len(batch)
    plain = all(len(row) == 1 and len(row[0].cands) == 1 for row in batch)
    ids = [[0] * width for _ in range(B)]
    pos = [list(range(width)) for _ in range(B)]
    if not plain:
        doc = torch.arange(width).repeat(B, 1) + 1_000_000  # padding: one document per token
        branch = torch.zeros(B, width, dtype=torch.long)
    rows, cols, targets, segment, cands = [], [], [], [], []
    for b, row in enumerate(batch):
        t = 0
        for d, u in enumerate(row):
            req = requests[u.request]
            c = len(req.context)
            ids[b][t:t + c] = req.context
            pos[b][t:t + c] = range(c)
            if not plain:
                doc[b, t:t + c] = d
            ctx_last = t + c - 1
            t += c
            for j in u.cands:
                cand = req.candidates[j]
                n = len(cand)
                ids[b][t:t + n] = cand
                pos[b][t:t + n] = range(c, c + n)
                if not plain:
                    doc[b, t:t + n] = d
                    branch[b, t:t + n] = j + 1
                rows += [b] * n
                cols.append(ctx_last)
                cols += range(t, t + n - 1)
                targets += cand
                segment += [len(cands)] * n
                cands.append((u.request, j))
                t += n
    allowed = None
    if not plain:
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same_doc = doc[:, :, None] == doc[:, None, :]
        branch_ok = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
        allowed = causal[None] & same_doc & branch_ok
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return _Layout(t(ids), t(pos), allowed, t(rows), t(cols), t(targets), t(segment), cands)


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


def _chunk_log_probs(logits: torch.Tensor, local: torch.Tensor, targets: torch.Tensor,
                     supports: list | None) -> torch.Tensor:
    """Log-probabilities of some tokens whose predictions are rows ``local`` of a chunk of logits.

    Several tokens may share a prediction (every candidate's first token is predicted from the context's last
    position): the full-vocabulary log-normaliser is taken once per logits row. Tokens with a support of their
    own are normalised over it, one group per support.
    """
    logits = logits.float()
    picked = logits[local, targets]
    if supports is None:
        return picked - torch.logsumexp(logits, dim=-1)[local]
    norm = torch.empty_like(picked)
    groups: dict = {}
    for i, sup in enumerate(supports):
        groups.setdefault(sup, []).append(i)
    for sup, idx in groups.items():
        ix = torch.tensor(idx, dtype=torch.long, device=logits.device)
        if sup is None:
            norm[ix] = torch.logsumexp(logits[local[ix]], dim=-1)
            continue
        cols = torch.tensor(sup, dtype=torch.long, device=logits.device)
        if not torch.isin(targets[ix], cols).all():
            raise ValueError("a hypothesis token lies outside the softmax support given for it")
        norm[ix] = torch.logsumexp(logits[local[ix]][:, cols], dim=-1)
    return picked - norm


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
    two_stage = callable(getattr(logits_fn, "hidden", None)) and callable(getattr(logits_fn, "head", None))
    for batch in _batches(_rows(_units(requests, cfg), cfg), cfg.batch_tokens, cfg.max_padding):
        lay = _layout(batch, requests)
        # One prediction per distinct position (a shared context's last one serves all its candidates).
        key = lay.rows * lay.ids.shape[1] + lay.cols
        uniq, inverse = torch.unique(key, return_inverse=True)
        rows, cols = uniq // lay.ids.shape[1], uniq % lay.ids.shape[1]
        args = (lay.ids.to(device), lay.positions.to(device),
                None if lay.allowed is None else lay.allowed.to(device), rows.to(device), cols.to(device))
        states = logits_fn.hidden(*args) if two_stage else logits_fn(*args)
        dev = states.device
        inverse, targets, segment = inverse.to(dev), lay.targets.to(dev), lay.segment.to(dev)
        seg_support = [requests[r].support[j] if requests[r].support is not None else None for r, j in lay.cands]
        tok_support = [seg_support[s] for s in lay.segment.tolist()] if any(seg_support) else None
        sums = torch.zeros(len(lay.cands), dtype=torch.float64, device=dev)
        step = cfg.head_rows(getattr(logits_fn, "vocab_rows", 32768), dev)
        for a in range(0, len(uniq), step):
            b = min(a + step, len(uniq))
            logits = logits_fn.head(states[a:b]) if two_stage else states[a:b]
            tok = ((inverse >= a) & (inverse < b)).nonzero().squeeze(1)
            sup = None if tok_support is None else [tok_support[i] for i in tok.tolist()]
            lp = _chunk_log_probs(logits, inverse[tok] - a, targets[tok], sup)
            sums.index_add_(0, segment[tok], lp.double())  # fp64 only for the per-candidate sums
        counts = torch.bincount(lay.segment, minlength=len(lay.cands)).tolist()
        for (r, j), total, n in zip(lay.cands, sums.tolist(), counts):
            out[r][j] = CandidateScore(total, n)
        if progress is not None:
            progress(len(targets))
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
