"""Benchmark items → scorer requests: the release's prompt form (docs/spec.md §5) and every open choice as an option.

An item is a context and candidates, each a list of :class:`Segment` (text, or speech named by its utterance id
in a units store). The prompt is ``<s>`` then each segment with ``[Text]``/``[Speech]`` wherever the modality
changes (the first segment always gets its marker, as training sequences start ``<s>[Text]``/``<s>[Speech]``):
``<s>[Text]context[Speech]ending-units``, ``<s>[Speech]units`` for a whole spoken story or a sWUGGY word.
Speech is the deduplicated unit string of the flavor, the same ids the model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from ..speech.manifest import UnitsRecord
from ..tokenizer.tokenizer import SpiritTokenizer
from ..tokenizer.vocab import SpiritVocab
from .generate import allowed_ids
from .scoring import Request

Modality = Literal["text", "speech"]


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt: ``text``, or speech given as the id of its utterance in the units store."""

    modality: Modality
    value: str

    def __post_init__(self):
        if self.modality not in ("text", "speech"):
            raise ValueError(f"segment modality must be 'text' or 'speech', got {self.modality!r}")


@dataclass(frozen=True)
class Item:
    """A two-way (or n-way) choice; candidate ``correct`` is the right one."""

    id: str
    context: tuple[Segment, ...]
    candidates: tuple[tuple[Segment, ...], ...]
    correct: int = 0
    #: Per candidate, the name the benchmark gives it (a ZeroSpeech wav stem), for submission files.
    names: tuple[str, ...] = ()
    meta: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptConfig:
    """The choices the paper leaves open. Defaults follow the release / training sequences (docs/spec.md §3, §5)."""

    #: Start every prompt with ``<s>`` (training documents do).
    bos: bool = True
    #: Where the marker in front of the candidates goes when they switch modality (``[Text]ctx[Speech]…``):
    #: ``context`` (shared, not scored; default) or ``hypothesis`` (scored as each candidate's first token).
    switch_marker: Literal["context", "hypothesis"] = "context"
    #: Softmax support: ``full`` vocabulary (the release) or the candidate's ``modality`` only (text ids, or
    #: the flavor's unit ids; markers excluded).
    softmax: Literal["full", "modality"] = "full"
    #: Lower-case text and strip punctuation as aligned training text is (docs/spec.md §3); off by default since
    #: the text-only training data keeps its case.
    normalise_text: bool = False
    #: Units flavor: ``base`` (HuBERT units) or ``expressive`` (HuBERT + pitch + style, time-merged); None: the
    #: units' own (``spirit-eval score``) or the tokenizer's.
    flavor: Literal["base", "expressive"] | None = None


def _marker_id(tok: SpiritTokenizer, modality: Modality) -> int:
    return tok.vocab.text_id if modality == "text" else tok.vocab.speech_id


class PromptBuilder:
    """Token ids of items' segments for one tokenizer, units store and configuration."""

    def __init__(self, tokenizer: SpiritTokenizer, cfg: PromptConfig = PromptConfig(),
                 units: Mapping[str, UnitsRecord] | None = None, units_where: str = "units store"):
        self.tok, self.cfg, self.units, self.where = tokenizer, cfg, units or {}, units_where
        self.flavor = cfg.flavor or tokenizer.vocab.flavor
        self._support = None
        if cfg.softmax == "modality":  # the modality's ids (docs/spec.md §7) plus both markers
            vocab = SpiritVocab(tokenizer.vocab.base_size, self.flavor)
            markers = [vocab.text_id, vocab.speech_id]
            self._support = {m: tuple(sorted(allowed_ids(vocab, m).tolist() + markers)) for m in ("text", "speech")}

    def content(self, seg: Segment, item: str) -> list[int]:
        if seg.modality == "text":
            text = seg.value
            if self.cfg.normalise_text:
                from ..data.alignments import normalize_text

                text = " ".join(normalize_text(text))
            ids = self.tok.encode_text(text) if text.strip() else []
            if not ids:
                raise ValueError(f"item {item!r}: empty text segment")
            return ids
        rec = self.units.get(seg.value)
        if rec is None:
            raise ValueError(f"item {item!r}: no units for utterance {seg.value!r} in {self.where} "
                             "(run spirit-eval units on this benchmark first)")
        ids = rec.merged(self.flavor).ids(self.tok.vocab).tolist()
        if not ids:
            raise ValueError(f"item {item!r}: utterance {seg.value!r} has no units in {self.where}")
        return ids

    def _segments(self, segs: Sequence[Segment], prev: Modality | None, item: str) -> tuple[list[int], Modality]:
        ids: list[int] = []
        for seg in segs:
            if seg.modality != prev:
                ids.append(_marker_id(self.tok, seg.modality))
                prev = seg.modality
            ids += self.content(seg, item)
        return ids, prev  # type: ignore[return-value]

    def request(self, item: Item) -> Request:
        ctx = [self.tok.bos_id] if self.cfg.bos else []
        part, last = self._segments(item.context, None, item.id)
        ctx += part
        first = {c[0].modality for c in item.candidates}
        if len(first) == 1 and self.cfg.switch_marker == "context":
            (m,) = first
            if m != last:
                ctx.append(_marker_id(self.tok, m))
                last = m
        cands = []
        for c in item.candidates:
            ids, _ = self._segments(c, last, item.id)
            cands.append(tuple(ids))
        support = None
        if self._support is not None:
            support = tuple(self._support[c[-1].modality] for c in item.candidates)
        if not ctx:
            raise ValueError(f"item {item.id!r}: empty context (bos=False and no marker): nothing predicts the "
                             "first hypothesis token")
        return Request(tuple(ctx), tuple(cands), support)
