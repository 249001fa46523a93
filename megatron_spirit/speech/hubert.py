"""HuBERT features from a local Hugging Face ``HubertModel`` folder, batched without padding leaks.

Why not ``model(input_values, attention_mask)``: HuBERT-base's first conv layer has a GroupNorm with one
group per channel, which normalises over *time*, so zero padding changes every frame of a padded utterance.
Here the conv stack runs batched but its GroupNorm statistics are taken over each utterance's own valid
samples (a masked norm), and the transformer gets a frame attention mask, with padded frames zeroed before the
positional convolution exactly as the unpadded sequence sees zero padding. Units are then the same alone or in
a batch (tests/speech/test_hubert.py). Layers are run only up to the deepest one asked for.

Frame timing: with a conv stack of total stride ``hop`` (640 for mHuBERT-25Hz) frame ``i`` starts at sample
``i * hop``, i.e. covers ``manifest.frame_span(i, rate)`` with ``rate = 16000 / hop``; a file of ``n`` samples
gives ``num_frames(n) = (n - receptive_field) // hop + 1`` frames. Long files are cut into chunks of at most
100 s that overlap by ``receptive_field - hop`` samples, so the frame count and timing do not depend on chunking.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import MAX_CHUNK_SECONDS, SAMPLE_RATE, chunk_bounds


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class ConvGeometry:
    """Total stride and receptive field (samples) of a conv feature extractor."""

    hop: int
    receptive_field: int

    @classmethod
    def of(cls, kernels: Sequence[int], strides: Sequence[int]) -> "ConvGeometry":
        rf, jump = 1, 1
        for k, s in zip(kernels, strides):
            rf += (k - 1) * jump
            jump *= s
        return cls(jump, rf)

    @property
    def rate(self) -> float:
        return SAMPLE_RATE / self.hop

    def num_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - self.receptive_field) // self.hop + 1)


class HubertFeaturizer:
    """Hidden states of chosen transformer layers (1-based as in fairseq/HF ``hidden_states``; 0 = input)."""

    def __init__(self, model_dir: str | Path, layers: Sequence[int] = (11,), device: str = "auto",
                 max_chunk_seconds: float = MAX_CHUNK_SECONDS, bf16: bool | None = None,
                 max_batch_seconds: float = 2 * MAX_CHUNK_SECONDS):
        from transformers import HubertModel

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
        self.model_dir = model_dir
        self.device = pick_device(device)
        self.model = HubertModel.from_pretrained(str(model_dir)).to(self.device).eval()
        cfg = self.model.config
        n_layers = cfg.num_hidden_layers
        self.layers = tuple(sorted(set(int(x) for x in layers)))
        bad = [x for x in self.layers if not 0 <= x <= n_layers]
        if bad:
            raise ValueError(f"{model_dir}: layer {bad[0]} out of range [0, {n_layers}]")
        self.geometry = ConvGeometry.of(cfg.conv_kernel, cfg.conv_stride)
        self.hidden_size = cfg.hidden_size
        self.normalize = _do_normalize(model_dir)
        self.bf16 = (self.device.type == "cuda") if bf16 is None else bf16
        hop = self.geometry.hop
        self.chunk_samples = max(hop, int(max_chunk_seconds * SAMPLE_RATE) // hop * hop)
        #: Padded samples one model call may hold (at least one chunk): callers' batches are split to fit.
        self.max_batch_samples = max(self.chunk_samples, int(max_batch_seconds * SAMPLE_RATE))

    @property
    def rate(self) -> float:
        return self.geometry.rate

    def num_frames(self, n_samples: int) -> int:
        return self.geometry.num_frames(n_samples)

    @torch.inference_mode()
    def __call__(self, wavs: Sequence[np.ndarray]) -> list[dict[int, np.ndarray]]:
        """For each waveform (16 kHz float32) a dict layer → (frames, hidden) float32 array.

        The chunks of all waveforms go through the model in padded batches sorted by length, each at most
        ``max_batch_seconds`` of padded audio (callers also bound what they pass by total audio seconds).
        """
        g = self.geometry
        pieces: list[tuple[int, np.ndarray]] = []
        for wi, wav in enumerate(wavs):
            wav = np.asarray(wav, dtype=np.float32)
            if self.normalize and len(wav):
                wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
            for a, b in chunk_bounds(len(wav), self.chunk_samples, g.receptive_field - g.hop, g.receptive_field):
                if b - a >= g.receptive_field:  # shorter audio holds no whole frame
                    pieces.append((wi, wav[a:b]))
        outs: list[list[dict[int, np.ndarray]]] = [[] for _ in wavs]
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][1]))
        by_piece: dict[int, dict[int, np.ndarray]] = {}
        group: list[int] = []
        for i in order + [-1]:  # the chunks of one long file never go through the model all at once
            if group and (i < 0 or len(pieces[group[0]][1]) * (len(group) + 1) > self.max_batch_samples):
                by_piece.update(zip(group, self._batch([pieces[j][1] for j in group])))
                group = []
            if i >= 0:
                group.append(i)
        for i, (wi, _) in enumerate(pieces):
            outs[wi].append(by_piece[i])
        empty = np.zeros((0, self.hidden_size), np.float32)
        return [{ly: np.concatenate([p[ly] for p in ps]) if ps else empty for ly in self.layers} for ps in outs]

    def _batch(self, wavs: list[np.ndarray]) -> list[dict[int, np.ndarray]]:
        dev = self.device
        lengths = torch.tensor([len(w) for w in wavs])
        x = torch.zeros(len(wavs), int(lengths.max()))
        for i, w in enumerate(wavs):
            x[i, : len(w)] = torch.from_numpy(w)
        x = x.to(dev)
        frames = [self.num_frames(len(w)) for w in wavs]
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            feats = self._conv(x, lengths.to(dev))  # (B, C, T)
            t = min(feats.shape[-1], max(frames))
            feats = feats[..., :t].transpose(1, 2)
            mask = torch.arange(t, device=dev)[None, :] < torch.tensor(frames, device=dev)[:, None]
            hidden = self._encode(self.model.feature_projection(feats), mask)
        return [{ly: hidden[ly][i, : frames[i]].float().cpu().numpy() for ly in self.layers}
                for i in range(len(wavs))]

    def _conv(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from transformers.models.hubert.modeling_hubert import HubertGroupNormConvLayer

        h = x[:, None]
        for layer in self.model.feature_extractor.conv_layers:
            conv = layer.conv
            lengths = torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
            if isinstance(layer, HubertGroupNormConvLayer):
                h = layer.activation(_masked_instance_norm(conv(h), lengths.clamp(min=1), layer.layer_norm))
            else:
                h = layer(h)
        return h

    def _encode(self, h: torch.Tensor, mask: torch.Tensor) -> dict[int, torch.Tensor]:
        from transformers.masking_utils import create_bidirectional_mask

        enc = self.model.encoder
        stable = self.model.config.do_stable_layer_norm
        h = h.masked_fill(~mask[..., None], 0.0)
        attn = create_bidirectional_mask(config=self.model.config, inputs_embeds=h, attention_mask=mask)
        h = h + enc.pos_conv_embed(h)
        if not stable:
            h = enc.layer_norm(h)
        out = {0: h} if 0 in self.layers else {}
        last = max(self.layers)
        for li, layer in enumerate(enc.layers[:last], start=1):
            h = layer(h, attention_mask=attn)
            if li in self.layers:
                out[li] = enc.layer_norm(h) if stable and li == len(enc.layers) else h
        return out


def _masked_instance_norm(h: torch.Tensor, lengths: torch.Tensor, norm: torch.nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel, statistics over each row's first ``lengths`` steps only."""
    dtype, h = h.dtype, h.float()  # statistics in fp32 even under bf16 autocast
    t = h.shape[-1]
    m = (torch.arange(t, device=h.device)[None, :] < lengths[:, None]).to(h.dtype)[:, None, :]  # (B,1,T)
    n = lengths.to(h.dtype)[:, None, None]
    mean = (h * m).sum(-1, keepdim=True) / n
    var = (((h - mean) * m) ** 2).sum(-1, keepdim=True) / n
    y = (h - mean) / torch.sqrt(var + norm.eps)
    return (y * norm.weight[None, :, None].float() + norm.bias[None, :, None].float()).to(dtype)


def _do_normalize(model_dir: Path) -> bool:
    """Whether the checkpoint expects zero-mean unit-variance input (HuBERT-large does; base does not)."""
    pre = model_dir / "preprocessor_config.json"
    if pre.is_file():
        try:
            return bool(json.loads(pre.read_text()).get("do_normalize", False))
        except json.JSONDecodeError as e:
            raise ValueError(f"{pre}: not JSON ({e})") from e
    return False


def tiny_hubert_config(hop: int = 640, hidden: int = 32, layers: int = 2, heads: int = 2, **kw):
    """A small random HuBERT with mHuBERT-25Hz's frame geometry (for tests and benchmarks; no weights needed)."""
    from transformers import HubertConfig

    if hop != 640:
        raise ValueError("only the 25 Hz geometry (hop 640) is built in")
    base = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden * 2,
        conv_dim=(16,) * 8, conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
    base.update(kw)
    return HubertConfig(**base)


def base_hubert_config():
    """HuBERT-base shapes (12 layers, 768 wide, 512-channel conv) with the 25 Hz conv stack."""
    return tiny_hubert_config(hidden=768, layers=12, heads=12, intermediate_size=3072, conv_dim=(512,) * 8,
                              num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def save_random_hubert(config, out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised ``HubertModel`` saved as a local folder (loaded by path like a real one)."""
    from transformers import HubertModel

    torch.manual_seed(seed)
    model = HubertModel(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    return out_dir
