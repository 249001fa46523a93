"""CTC acoustic models for alignment: a local Hugging Face ``Wav2Vec2ForCTC``-style folder → log-probabilities.

Long audio is cut into windows (``window_seconds``, 30 s as MMS's aligner) that each see ``context_seconds`` of
audio on both sides; only a window's own frames are kept, so frame ``i`` of the file always starts at sample
``i * hop`` and the emissions of all windows join into one sequence aligned in one pass (no offsets to add
later). Windows are batched; a model with GroupNorm in its conv stack (``feat_extract_norm="group"``,
wav2vec2-base-960h) normalises over time, so zero padding would change its output: such models batch only
windows of equal length (all full windows), layer-norm models (large, MMS) batch any windows with an attention
mask. The star column (log-probability 0) is appended last, as torchaudio's MMS aligner does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..speech.audio import SAMPLE_RATE
from ..speech.hubert import ConvGeometry, pick_device
from .targets import Alphabet


class CtcModel:
    """Emissions of a local CTC model folder (config.json, weights, vocab.json; MMS: ``lang`` picks the adapter
    and vocabulary)."""

    def __init__(self, model_dir: str | Path, device: str = "auto", lang: str | None = None,
                 window_seconds: float = 30.0, context_seconds: float = 2.0, max_batch_seconds: float = 200.0):
        from transformers import AutoModelForCTC, Wav2Vec2CTCTokenizer

        model_dir = Path(model_dir)
        if model_dir.suffix == ".nemo":
            raise ValueError(f"{model_dir}: NeMo .nemo models are not supported (see README, Word alignment); "
                             "give a Hugging Face Wav2Vec2ForCTC-style folder")
        if not (model_dir / "config.json").is_file() or not (model_dir / "vocab.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a Hugging Face CTC model folder (config.json + vocab.json)")
        self.device = pick_device(device)
        try:
            tok = Wav2Vec2CTCTokenizer.from_pretrained(str(model_dir), **({"target_lang": lang} if lang else {}))
        except (ValueError, KeyError, OSError) as e:
            raise ValueError(f"{model_dir}: cannot read its vocabulary ({e})") from e
        vocab = tok.encoder
        if vocab and isinstance(next(iter(vocab.values())), dict):
            raise ValueError(f"{model_dir}: a multilingual vocabulary ({len(vocab)} languages): pick one with --lang")
        self.model = AutoModelForCTC.from_pretrained(str(model_dir)).to(self.device).eval()
        cfg = self.model.config
        if lang and getattr(cfg, "adapter_attn_dim", None):
            self.model.load_adapter(lang)
        blank = cfg.pad_token_id if cfg.pad_token_id is not None else tok.pad_token_id
        self.alphabet = Alphabet.of(vocab, int(blank), tok.word_delimiter_token)
        if self.alphabet.star != cfg.vocab_size:
            raise ValueError(f"{model_dir}: vocab.json has {self.alphabet.star} tokens, the model outputs "
                             f"{cfg.vocab_size}")
        self.geometry = ConvGeometry.of(cfg.conv_kernel, cfg.conv_stride)
        self.group_norm = getattr(cfg, "feat_extract_norm", "group") == "group"
        self.normalize = _do_normalize(model_dir)
        hop = self.geometry.hop
        self.window = max(hop, int(window_seconds * SAMPLE_RATE) // hop * hop)
        self.context = int(context_seconds * SAMPLE_RATE) // hop * hop
        self.max_batch_samples = max(self.window + 2 * self.context + self.geometry.receptive_field,
                                     int(max_batch_seconds * SAMPLE_RATE))

    @property
    def frame_seconds(self) -> float:
        return self.geometry.hop / SAMPLE_RATE

    def num_frames(self, n_samples: int) -> int:
        return self.geometry.num_frames(n_samples)

    def _logits(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x, mask = x.to(self.device), None if mask is None else mask.to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.model(input_values=x, attention_mask=mask).logits.float()

    @torch.inference_mode()
    def __call__(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Log-probabilities (frames, vocab + star) of each 16 kHz waveform, on the model's device."""
        prepared = []
        for w in wavs:
            w = np.asarray(w, dtype=np.float32)
            if self.normalize and len(w):
                w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
            prepared.append(w)
        return emissions_in_windows(prepared, self._logits, self.geometry, self.window, self.context,
                                    self.max_batch_samples, not self.group_norm, self.alphabet.size)


def window_pieces(n_samples: int, geometry: ConvGeometry, window: int, context: int) -> list[tuple[int, int, int, int]]:
    """``(piece_start, piece_end, first_frame, frames)`` per window: the piece's audio [start, end) and the global
    frames [first_frame, first_frame + frames) it contributes (piece frame ``j`` is global ``start / hop + j``)."""
    hop, rf = geometry.hop, geometry.receptive_field
    total = geometry.num_frames(n_samples)
    per = window // hop
    out = []
    for first in range(0, total, per):
        frames = min(per, total - first)
        a = max(0, first * hop - context)
        b = min(n_samples, (first + frames - 1) * hop + rf + context)
        out.append((a, b, first, frames))
    return out


def emissions_in_windows(wavs: Sequence[np.ndarray], logits_fn, geometry: ConvGeometry, window: int, context: int,
                         max_batch_samples: int, pad_any: bool, columns: int) -> list[torch.Tensor]:
    """Run ``logits_fn(x (B, N) on CPU, mask or None) → (B, frames, V)`` (on any device) over every window of
    every waveform, batched (padded with a mask when ``pad_any``, else only equal-length pieces together); join
    each file's frames and append the star column."""
    hop = geometry.hop
    pieces = []  # (wav index, start, end, first frame, frames)
    for wi, w in enumerate(wavs):
        for a, b, first, n in window_pieces(len(w), geometry, window, context):
            pieces.append((wi, a, b, first, n))
    outs: list[list[tuple[int, torch.Tensor]]] = [[] for _ in wavs]
    order = sorted(range(len(pieces)), key=lambda i: -(pieces[i][2] - pieces[i][1]))
    group: list[int] = []

    def run(group: list[int]) -> None:
        lens = [pieces[i][2] - pieces[i][1] for i in group]
        x = torch.zeros(len(group), max(lens))
        for r, i in enumerate(group):
            wi, a, b, _, _ = pieces[i]
            x[r, : b - a] = torch.from_numpy(np.ascontiguousarray(wavs[wi][a:b]))
        mask = None
        if len(set(lens)) > 1:
            mask = (torch.arange(max(lens))[None, :] < torch.tensor(lens)[:, None]).long()
        lp = torch.log_softmax(logits_fn(x, mask), dim=-1)
        for r, i in enumerate(group):
            wi, a, _, first, n = pieces[i]
            skip = first - a // hop
            got = lp[r, skip: skip + n]
            if got.shape[0] != n:
                raise ValueError(f"CTC model gave {lp.shape[1]} frames for {lens[r]} samples; expected its conv "
                                 f"stack's {geometry.num_frames(lens[r])} (stride {hop})")
            outs[wi].append((first, got))

    for i in order + [-1]:
        if group:
            longest = pieces[group[0]][2] - pieces[group[0]][1]
            this = pieces[i][2] - pieces[i][1] if i >= 0 else -1
            if i < 0 or longest * (len(group) + 1) > max_batch_samples or (not pad_any and this != longest):
                run(group)
                group = []
        if i >= 0:
            group.append(i)
    result = []
    for ps in outs:
        ps.sort(key=lambda p: p[0])
        lp = torch.cat([p[1] for p in ps]) if ps else torch.zeros(0, columns - 1)
        result.append(torch.cat([lp, torch.zeros(lp.shape[0], 1, dtype=lp.dtype, device=lp.device)], dim=1))
    return result


def _do_normalize(model_dir: Path) -> bool:
    """The feature extractor's ``do_normalize`` (preprocessor_config.json, or inside processor_config.json)."""
    if not any((model_dir / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        return False
    from transformers import Wav2Vec2FeatureExtractor

    try:
        return bool(Wav2Vec2FeatureExtractor.from_pretrained(str(model_dir)).do_normalize)
    except (OSError, ValueError) as e:
        raise ValueError(f"{model_dir}: cannot read its feature extractor config ({e})") from e


#: Letters + apostrophe, "|" between words, "<pad>" the CTC blank: the tokens of a character CTC model.
CHAR_VOCAB = ("<pad>", "<unk>", "|", "'", *"abcdefghijklmnopqrstuvwxyz")


def save_random_ctc(out_dir: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0,
                    vocab: Sequence[str] = CHAR_VOCAB, **config) -> Path:
    """A small random ``Wav2Vec2ForCTC`` (wav2vec2's 50 Hz conv stack) with its tokenizer and feature extractor,
    saved as a local folder loaded like a real one (tests, demos)."""
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    tok = Wav2Vec2CTCTokenizer(str(out_dir / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                               word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=False)
    cfg = Wav2Vec2Config(**{**dict(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=2, intermediate_size=hidden * 2, conv_dim=(16,) * 7,
                                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                   feat_extract_norm="group", pad_token_id=0, ctc_loss_reduction="mean"), **config})
    torch.manual_seed(seed)
    Wav2Vec2ForCTC(cfg).eval().save_pretrained(str(out_dir))
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(out_dir))
    return out_dir
