"""Few-shot ASR, TTS and intent classification with the paper's Appendix B prompts (docs/spec.md §5).

Prompts (token ids; ``<s>`` first; the shots drawn at random, seeded, from the other utterances of the set, then
dropped from the front while the prompt is longer than the paper's context):

* ASR, 10 shots, context ≤ 1024: shots ``[Speech]units[Text]<START Transcript> text <END>``, the item
  ``[Speech]units[Text]``; the transcript is what the model writes up to ``<END>``; WER against the reference.
* TTS, 10 shots, context ≤ 2048: shots ``[Text]text[Speech]units``, the item ``[Text]text[Speech]``; the
  generated units are written out. The paper's CER needs a unit vocoder and an ASR model (Whisper), which this
  project does not ship: run them on ``items/tts.jsonl``.
* Intent classification, 30 shots: shots ``[Speech]units[Text] A:label``, the item ``[Speech]units[Text] A:``;
  the first word written is the prediction, exact match with the label.

Generation is greedy and constrained to the target modality's tokens (:mod:`.generate`), so runs repeat.
"""
from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import torch

from ..speech.manifest import UnitsRecord
from ..tokenizer.tokenizer import SpiritTokenizer
from ..utils.atomic import write_text
from .generate import ModalityMask, allowed_ids

Task = Literal["asr", "tts", "ic"]
SHOTS = {"asr": 10, "tts": 10, "ic": 30}
CONTEXT = {"asr": 1024, "tts": 2048, "ic": 4096}
START, END = "<START Transcript>", "<END>"


@dataclass(frozen=True)
class FewShotItem:
    id: str
    prompt: tuple[int, ...]
    shots: int
    reference: str


class FewShotPrompts:
    """Prompt ids of one task over a labelled set (utterance id → label) and its units."""

    def __init__(self, task: Task, tokenizer: SpiritTokenizer, labels: Mapping[str, str],
                 units: Mapping[str, UnitsRecord], flavor: str):
        if task not in SHOTS:
            raise ValueError(f"few-shot task must be one of {', '.join(SHOTS)}, got {task!r}")
        self.task, self.tok, self.labels, self.units, self.flavor = task, tokenizer, dict(labels), units, flavor
        missing = [u for u in self.labels if u not in units]
        if missing:
            raise ValueError(f"{len(missing)} utterances have no units (e.g. {missing[0]!r}): run spirit-eval units")
        v = tokenizer.vocab
        self.text_marker, self.speech_marker = v.text_id, v.speech_id

    def _units(self, uid: str) -> list[int]:
        return self.units[uid].merged(self.flavor).ids(self.tok.vocab).tolist()

    def _text(self, text: str) -> list[int]:
        return list(self.tok.encode_text(text))

    def part(self, uid: str, shot: bool) -> list[int]:
        label = self.labels[uid]
        if self.task == "asr":
            out = [self.speech_marker] + self._units(uid) + [self.text_marker]
            return out + self._text(f"{START} {label} {END}") if shot else out
        if self.task == "tts":
            out = [self.text_marker] + self._text(label) + [self.speech_marker]
            return out + self._units(uid) if shot else out
        out = [self.speech_marker] + self._units(uid) + [self.text_marker]
        return out + self._text(f"A:{label}" if shot else "A:")

    def item(self, uid: str, shots: int, rng: random.Random) -> FewShotItem:
        others = [u for u in self.labels if u != uid]
        chosen = rng.sample(others, min(shots, len(others)))
        parts = [self.part(u, True) for u in chosen]
        tail = self.part(uid, False)
        while parts and 1 + sum(map(len, parts)) + len(tail) > CONTEXT[self.task]:
            parts.pop(0)
        ids = [self.tok.bos_id] + [i for p in parts for i in p] + tail
        return FewShotItem(uid, tuple(ids), len(parts), self.labels[uid])


def _normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(hyp: str, ref: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after lower-casing and dropping punctuation."""
    h, r = _normalise(hyp), _normalise(ref)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, start=1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1], len(r)


def transcript(generated: str) -> str:
    """The ASR answer: the text after ``<START Transcript>`` (if written) up to ``<END>``."""
    text = generated.split(END, 1)[0]
    return text.split(START, 1)[-1].strip()


def intent(generated: str) -> str:
    words = generated.strip().split()
    return words[0] if words else ""


@torch.no_grad()
def _generate(model, vocab, prompt: Sequence[int], modality: str, max_new_tokens: int, device) -> list[int]:
    from transformers import LogitsProcessorList

    rows = model.get_output_embeddings().weight.shape[0]
    ids = torch.tensor([list(prompt)], device=device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, logits_processor=LogitsProcessorList(
                             [ModalityMask(allowed_ids(vocab, modality), rows)]),
                         pad_token_id=2, eos_token_id=2)
    return out[0, ids.shape[1]:].tolist()


def run_fewshot(task: Task, model, tokenizer: SpiritTokenizer, labels: Mapping[str, str],
                units: Mapping[str, UnitsRecord], flavor: str, out_dir: str | Path, shots: int | None = None,
                max_items: int | None = None, max_new_tokens: int | None = None, seed: int = 0, device="cpu",
                model_name: str = "", log=print) -> dict:
    """Prompt, generate and score every item (or the first ``max_items``); results.json + items/<task>.jsonl."""
    from ..tokenizer.vocab import SpiritVocab

    t0 = time.perf_counter()
    prompts = FewShotPrompts(task, tokenizer, labels, units, flavor)
    vocab = SpiritVocab(tokenizer.vocab.base_size, flavor)
    shots = SHOTS[task] if shots is None else shots
    rng = random.Random(seed)
    uids = sorted(labels)[:max_items] if max_items else sorted(labels)
    new = max_new_tokens or {"asr": 128, "tts": 256, "ic": 8}[task]
    records, errors, words, hits = [], 0, 0, 0
    for uid in uids:
        item = prompts.item(uid, shots, rng)
        out = _generate(model, vocab, item.prompt, "speech" if task == "tts" else "text", new, device)
        rec = {"id": uid, "shots": item.shots, "prompt_tokens": len(item.prompt), "reference": item.reference}
        if task == "tts":
            rec["units"] = "".join(vocab.id_to_token.get(i, "") for i in out if vocab.is_speech_id(i))
        else:
            text = tokenizer.decode([i for i in out if i < tokenizer.vocab.base_size])
            if task == "asr":
                rec["hypothesis"] = transcript(text)
                e, n = word_errors(rec["hypothesis"], item.reference)
                errors, words, rec["errors"] = errors + e, words + n, e
            else:
                rec["prediction"] = intent(text)
                rec["correct"] = rec["prediction"] == item.reference
                hits += rec["correct"]
        records.append(rec)
    result = {"task": task, "shots": shots, "items": len(records), "seed": seed, "flavor": flavor}
    if task == "asr":
        result["wer"] = errors / max(words, 1)
        summary = f"WER {100 * result['wer']:.1f}"
    elif task == "ic":
        result["accuracy"] = hits / max(len(records), 1)
        summary = f"accuracy {100 * result['accuracy']:.1f}"
    else:
        result["note"] = ("CER needs a unit vocoder and an ASR model (the paper: Whisper), which this project does "
                          "not ship: vocode items/tts.jsonl's units and transcribe them")
        summary = "generated units written (" + result["note"] + ")"
    result["seconds"] = round(time.perf_counter() - t0, 3)
    out = Path(out_dir)
    (out / "items").mkdir(parents=True, exist_ok=True)
    write_text(out / "items" / f"{task}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_text(out / "results.json", json.dumps({"model": model_name, "fewshot": result}, indent=2) + "\n")
    log(f"{task} {shots}-shot: {len(records)} items, {summary}")
    return result
