#!/usr/bin/env python
"""Word-boundary accuracy of the CTC aligner where no real model is at hand (issue #15's figure).

A small character CTC model is trained on the fly on espeak-ng speech (``--train`` sentences of the seeded
generator, the four corpus voices; ``--steps`` batches, at most ``--train-seconds``), then held-out sentences
(another seed) are aligned through the aligner's own path (``make_targets`` → ``align_emissions``: the batched
Viterbi, word spans, the 50 Hz frame timing of wav2vec2's conv stack) and each word's start and end are compared
with espeak's own word times (from its phoneme events). Beside it: the same figure for espeak's times shifted by
one HuBERT frame (40 ms), the granularity interleaving works at. Also the alignment scores (``--min-score``) of the
right transcripts and of wrong ones (each utterance against the next one's transcript). The model is not
wav2vec2 (a raw-waveform transformer learns nothing in a few CPU minutes): log-magnitude spectra (400-sample
windows every 320 samples, the frames of wav2vec2's conv stack) → 4 convolutions → characters. The generator's
vocabulary is small, so held-out sentences reuse training words; the figure measures timing, not recognition.

    OMP_NUM_THREADS=1 python benchmarks/bench_align.py --train 400 --test 60 --steps 420 --channels 128
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOP, WIN = 320, 400  # wav2vec2's conv stack: frame i covers samples [i*320, i*320 + 400)


def spectra(wav: np.ndarray):
    import torch

    x = torch.from_numpy(wav)
    s = torch.stft(x, n_fft=WIN, hop_length=HOP, win_length=WIN, window=torch.hann_window(WIN), center=False,
                   return_complex=True).abs().clamp(min=1e-5).log().T  # (frames, 201)
    return (s - s.mean(0)) / (s.std(0) + 1e-5)


def speak(n: int, seed: int):
    from megatron_spirit.synth.espeak import VOICES, synthesize
    from megatron_spirit.synth.text import sentences

    return [synthesize(text, **VOICES[i % len(VOICES)]) for i, text in enumerate(sentences(n, seed))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=400, help="training sentences")
    ap.add_argument("--test", type=int, default=60, help="held-out sentences aligned")
    ap.add_argument("--steps", type=int, default=420, help="training steps (batches)")
    ap.add_argument("--train-seconds", type=float, default=240.0, help="stop training earlier past this wall time")
    ap.add_argument("--channels", type=int, default=192)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(0)
    from megatron_spirit.align.aligner import align_emissions
    from megatron_spirit.align.model import CHAR_VOCAB
    from megatron_spirit.align.targets import Alphabet, make_targets

    alpha = Alphabet.of({t: i for i, t in enumerate(CHAR_VOCAB)}, blank=0)
    t0 = time.perf_counter()
    train, test = speak(args.train, 0), speak(args.test, 1)
    synth_s = time.perf_counter() - t0
    feats = [spectra(s.audio) for s in train]
    targets = [torch.tensor(make_targets(s.text, alpha).tokens) for s in train]
    c = args.channels
    layers = [torch.nn.Conv1d(feats[0].shape[1], c, 5, padding=2), torch.nn.ReLU()]
    for d in (1, 2, 1):
        layers += [torch.nn.Conv1d(c, c, 5, padding=2 * d, dilation=d), torch.nn.ReLU()]
    layers += [torch.nn.Conv1d(c, alpha.size - 1, 1)]
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    ctc = torch.nn.CTCLoss(blank=alpha.blank, zero_infinity=True)

    def forward(batch):
        t_max = max(f.shape[0] for f in batch)
        x = torch.zeros(len(batch), batch[0].shape[1], t_max)
        for i, f in enumerate(batch):
            x[i, :, : f.shape[0]] = f.T
        return net(x).transpose(1, 2).log_softmax(-1)  # (B, T, V)

    t0, steps, epoch, loss_v = time.perf_counter(), 0, 0, float("nan")
    rng = np.random.default_rng(0)
    while steps < args.steps and time.perf_counter() - t0 < args.train_seconds:
        order = rng.permutation(len(feats))
        for k in range(0, len(order), args.batch):
            idx = order[k: k + args.batch]
            lp = forward([feats[i] for i in idx])
            loss = ctc(lp.transpose(0, 1), torch.cat([targets[i] for i in idx]),
                       torch.tensor([feats[i].shape[0] for i in idx]), torch.tensor([len(targets[i]) for i in idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps, loss_v = steps + 1, loss.item()
            if steps >= args.steps or time.perf_counter() - t0 >= args.train_seconds:
                break
        epoch += 1
        print(f"epoch {epoch}: step {steps}, CTC loss {loss_v:.3f}, {time.perf_counter() - t0:.0f} s", flush=True)
    train_s = time.perf_counter() - t0

    net.eval()
    with torch.no_grad():
        ems = []
        for s in test:
            lp = forward([spectra(s.audio)])[0]
            ems.append(torch.cat([lp, torch.zeros(lp.shape[0], 1)], 1))  # the star column, as CtcModel appends
    tgs = [make_targets(s.text, alpha) for s in test]
    t0 = time.perf_counter()
    got = align_emissions(ems, tgs, HOP / 16000, alpha.blank)
    align_s = time.perf_counter() - t0
    # The score --min-score reads: each utterance against the next one's transcript (a wrong transcript).
    wrong = align_emissions(ems, tgs[1:] + tgs[:1], HOP / 16000, alpha.blank)
    err_start, err_end, bias_start, bias_end, shifted, skipped = [], [], [], [], [], 0
    for s, al in zip(test, got):
        ref = [w for w in s.words]
        if not hasattr(al, "words") or list(al.words) != [w.word for w in ref]:
            skipped += 1
            continue
        rs, re_ = np.array([w.start for w in ref]), np.array([w.end for w in ref])
        err_start += list(np.abs(al.starts - rs))
        err_end += list(np.abs(al.ends - re_))
        bias_start += list(al.starts - rs)
        bias_end += list(al.ends - re_)
        shifted += list(np.abs(np.clip(np.r_[rs, re_] + 0.040, 0, s.duration) - np.r_[rs, re_]))

    def ms(a):
        return {"mean_ms": round(1000 * float(np.mean(a)), 1), "p95_ms": round(1000 * float(np.percentile(a, 95)), 1)}

    both = err_start + err_end
    res = {
        "train_sentences": args.train, "test_sentences": args.test, "test_words": len(err_start),
        "skipped_utterances": skipped, "train_steps": steps, "epochs": epoch, "final_ctc_loss": round(loss_v, 3),
        "train_seconds": round(train_s, 1), "synth_seconds": round(synth_s, 1), "align_seconds": round(align_s, 2),
        "ctc_boundaries": ms(both), "ctc_starts": ms(err_start), "ctc_ends": ms(err_end),
        "within_40ms": round(float(np.mean(np.array(both) <= 0.040)), 3),
        "start_bias_ms": round(1000 * float(np.mean(bias_start)), 1),
        "end_bias_ms": round(1000 * float(np.mean(bias_end)), 1),
        "score_right_transcript": _scores([a.score for a in got if hasattr(a, "score")]),
        "score_wrong_transcript": _scores([a.score for a in wrong if hasattr(a, "score")]),
        "espeak_shifted_40ms": ms(shifted),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


def _scores(a):
    return {"mean": round(float(np.mean(a)), 3), "min": round(float(np.min(a)), 3), "max": round(float(np.max(a)), 3),
            "n": len(a)}


if __name__ == "__main__":
    main()
