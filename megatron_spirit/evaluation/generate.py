"""Generation as SpiRit-LM's release does it, on any exported Hugging Face folder (docs/spec.md §7).

Three output modalities (the release's TEXT, SPEECH and ARBITRARY):

- ``text``: the prompt gets ``[Text]`` appended unless its last modality already is text; only the base
  (sentencepiece) ids may be sampled, so no marker and no unit; EOS ends it. The text is stripped.
- ``speech``: ``[Speech]`` is appended unless the prompt already ends in speech; only the flavor's unit ids may
  be sampled: no text, no marker and no EOS, so a speech continuation runs to ``max_new_tokens``.
- ``free``: nothing is appended and nothing of the flavor is banned; the continuation is split into text and
  speech segments (markers dropped, consecutive same-modality pieces joined), and a speech segment with fewer
  than ``min_speech_units`` HuBERT units is dropped unless it is the first segment and does not continue the
  prompt's speech (the release's rule before its vocoder; 0 keeps every segment).

A prompt is a string that may mix text, markers and unit tokens. With ``add_markers`` (the default) a marker is
also put wherever the prompt's own modality changes without one, as the release builds prompts from its list
of text/speech inputs. Sampling defaults to the release's evaluation settings: temperature 0.8, top-p 0.95 and
the top-k 50 that transformers' ``GenerationConfig`` leaves in place. Every default can be overridden.

The output is cut from the prompt by ids (the release decodes everything and cuts the string at the prompt's
length, which goes wrong whenever decoding does not reproduce the prompt's characters).

:func:`allowed_ids` / :class:`ModalityMask` are also the support sets of few-shot generation and of
modality-restricted scoring; those keep their own (EOS-allowing) speech set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from ..tokenizer.units import string_to_units
from ..tokenizer.vocab import HUBERT, SpiritVocab

Modality = Literal["text", "speech", "free"]
MODALITIES = ("text", "speech", "free")


def allowed_ids(vocab: SpiritVocab, modality: Literal["text", "speech"]) -> torch.Tensor:
    """Ids a few-shot continuation / a restricted softmax in ``modality`` may use (EOS included; markers, BOS
    and <unk> excluded)."""
    if modality == "text":
        ids = [i for i in range(vocab.base_size) if i not in (0, 1)]  # no <unk>, no <s>
    elif modality == "speech":
        ids = [2] + [vocab.stream_offset(s) + u for s in vocab.streams for u in range(s.count)]
    else:
        raise ValueError(f"modality must be 'text' or 'speech', got {modality!r}")
    return torch.tensor(ids, dtype=torch.long)


def release_allowed_ids(vocab: SpiritVocab, modality: Modality) -> torch.Tensor:
    """Ids the release lets each output modality sample, on this vocabulary's offsets.

    text: every base id (<unk>, <s>, </s> included; the release bans the markers and the unit ids). speech: the
    flavor's unit ids only (the release bans ids 0 … base+1, EOS among them). free: base ids, markers and the
    flavor's units. Rows the flavor does not use (BASE's pitch/style rows, rows past the tokenizer) are never
    allowed: the release leaves some of them open, but they hold no trained token.
    """
    units = [vocab.stream_offset(s) + u for s in vocab.streams for u in range(s.count)]
    if modality == "text":
        ids = list(range(vocab.base_size))
    elif modality == "speech":
        ids = units
    elif modality == "free":
        ids = list(range(vocab.base_size)) + [vocab.text_id, vocab.speech_id] + units
    else:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    return torch.tensor(ids, dtype=torch.long)


class ModalityMask:
    """A transformers LogitsProcessor that keeps only the allowed ids."""

    def __init__(self, allowed: torch.Tensor, vocab_rows: int):
        self.mask = torch.full((vocab_rows,), float("-inf"))
        self.mask[allowed[allowed < vocab_rows]] = 0.0

    def __call__(self, input_ids, scores):
        return scores + self.mask[: scores.shape[-1]].to(scores.device, scores.dtype)


@dataclass(frozen=True)
class GenerateConfig:
    """How to sample; the defaults are the release's (see the module docstring)."""

    max_new_tokens: int = 200
    do_sample: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    seed: int | None = 0
    #: Put the output modality's marker after the prompt, and markers where the prompt's modality changes.
    add_markers: bool = True
    #: Free mode: shortest speech segment kept (HuBERT units), as the release before its vocoder; 0 keeps all.
    min_speech_units: int = 24
    #: The base vocabulary's <unk>, <s>, </s> ids (LLaMA's).
    special_ids: tuple[int, int, int] = (0, 1, 2)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1 and self.top_k >= 0):
            raise ValueError(f"sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0 (got "
                             f"{self.temperature}, {self.top_p}, {self.top_k})")


@dataclass(frozen=True)
class Segment:
    """A piece of the continuation in one modality: its ids and its text or unit string."""

    modality: Literal["text", "speech"]
    ids: tuple[int, ...]
    content: str

    def units(self) -> dict[str, list[int]]:
        """Per-stream units of a speech segment, one entry per HuBERT unit (pitch/style carried forward), as
        the release hands them to its vocoder."""
        if self.modality != "speech":
            raise ValueError("a text segment has no units")
        return string_to_units(self.content)


@dataclass(frozen=True)
class Generation:
    prompt: str  # as given to the model, markers included
    prompt_ids: list[int]
    ids: list[int]  # the continuation only
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All kept segments joined (the whole continuation for text and speech)."""
        return "".join(s.content for s in self.segments)

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "prompt_ids": self.prompt_ids, "ids": self.ids,
                "segments": [{"modality": s.modality, "content": s.content} for s in self.segments]}


def _modality_of(vocab: SpiritVocab, token_id: int) -> str | None:
    if token_id == vocab.text_id:
        return "text"
    if token_id == vocab.speech_id:
        return "speech"
    if vocab.is_speech_id(token_id):
        return "speech"
    return "text" if vocab.is_text_id(token_id) else None


def build_prompt(vocab: SpiritVocab, ids: Sequence[int], modality: Modality, add_markers: bool = True,
                 special_ids: Sequence[int] = (0, 1, 2)) -> list[int]:
    """Prompt ids with markers where the modality changes and, for text/speech output, the output's marker
    unless the prompt already ends in that modality (free output appends nothing)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    if not add_markers:
        return list(ids)
    marker = {"text": vocab.text_id, "speech": vocab.speech_id}
    out: list[int] = []
    cur = None
    for i in ids:
        if i in special_ids:
            out.append(i)
            continue
        m = _modality_of(vocab, i)
        if i in (vocab.text_id, vocab.speech_id):
            cur = m
        elif m is not None and m != cur:
            out.append(marker[m])
            cur = m
        out.append(i)
    if modality != "free" and cur != modality:
        out.append(marker[modality])
    return out


def split_segments(vocab: SpiritVocab, decode_text, ids: Sequence[int], prompt_ids: Sequence[int] = (),
                   min_speech_units: int = 24, special_ids: Sequence[int] = (0, 1, 2)) -> list[Segment]:
    """A free continuation as text and speech segments (see the module docstring for the rule)."""
    pieces: list[tuple[str, list[int]]] = []
    for i in ids:
        if i in special_ids or i in (vocab.text_id, vocab.speech_id):
            continue  # decoded away / dropped, as the release drops markers: neither splits a segment
        m = "speech" if vocab.is_speech_id(i) else "text"
        if pieces and pieces[-1][0] == m:
            pieces[-1][1].append(i)
        else:
            pieces.append((m, [i]))
    tail = [i for i in prompt_ids if i not in special_ids][-1:]
    # The release's one exception: speech right after the prompt's speech is judged on its new units only.
    continues = bool(tail and len(ids) and vocab.is_speech_id(tail[0]) and vocab.is_speech_id(ids[0]))
    hu_lo = vocab.stream_offset(HUBERT)
    segments = []
    for k, (m, seg) in enumerate(pieces):
        if m == "speech":
            hubert = sum(1 for i in seg if hu_lo <= i < hu_lo + HUBERT.count)
            if hubert < min_speech_units and (k > 0 or continues):
                continue
            segments.append(Segment("speech", tuple(seg), _unit_string(vocab, seg)))
        else:
            text = decode_text(seg)
            if k == 0:
                text = text.lstrip()
            if k == len(pieces) - 1:
                text = text.rstrip()
            if text:
                segments.append(Segment("text", tuple(seg), text))
    return segments


def _unit_string(vocab: SpiritVocab, ids: Sequence[int]) -> str:
    table = vocab.id_to_token
    return "".join(table[i] for i in ids)


@torch.no_grad()
def generate(model, tokenizer, prompt: str, modality: Modality = "text",
             config: GenerateConfig = GenerateConfig()) -> Generation:
    """Continue ``prompt`` (text, markers and unit tokens) in ``modality``. ``tokenizer`` is a
    :class:`~megatron_spirit.tokenizer.tokenizer.SpiritTokenizer`, opened with the model's flavor."""
    from transformers import LogitsProcessorList

    vocab = tokenizer.vocab
    special = config.special_ids
    ids = build_prompt(vocab, tokenizer.encode(prompt), modality, config.add_markers, special)
    ids = [tokenizer.bos_id] + [i for i in ids if i != tokenizer.bos_id]
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < vocab.size:
        raise ValueError(f"the model has {rows} output rows but the {vocab.flavor} vocabulary needs {vocab.size}: "
                         "is the tokenizer (or its flavor) the model's?")
    if config.seed is not None:
        torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    sampling = dict(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k) \
        if config.do_sample else dict(do_sample=False)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=config.max_new_tokens,
                         logits_processor=LogitsProcessorList([ModalityMask(release_allowed_ids(vocab, modality),
                                                                            rows)]),
                         pad_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id, **sampling)
    new = out[0, len(ids):].tolist()  # by ids: nothing of the prompt can leak into the continuation
    prompt_str = tokenizer.decode(ids)
    if modality == "text":
        body = [i for i in new if i not in special]
        text = tokenizer.decode(body).strip()
        segments = [Segment("text", tuple(body), text)] if text else []
    elif modality == "speech":
        segments = [Segment("speech", tuple(new), _unit_string(vocab, new))] if new else []
    else:
        segments = split_segments(vocab, tokenizer.decode, new, ids, config.min_speech_units, special)
    return Generation(prompt_str, ids, new, segments)
