"""Word alignment: the CTC Viterbi path on constructed emissions, windows, targets, and `spirit-units align` end to
end on the espeak corpus with a tiny random CTC model (structure, rejects, resume, interleaved data from it)."""
import json

import numpy as np
import pytest
import torch

from megatron_spirit.align.aligner import align_emissions
from megatron_spirit.align.model import CHAR_VOCAB, emissions_in_windows
from megatron_spirit.align.targets import Alphabet, make_targets
from megatron_spirit.align.viterbi import forced_align, min_frames
from megatron_spirit.speech.hubert import ConvGeometry

VOCAB = {t: i for i, t in enumerate(CHAR_VOCAB)}
ALPHA = Alphabet.of(VOCAB, blank=0)
B, D = VOCAB["<pad>"], VOCAB["|"]
STAR = ALPHA.star
GEOM = ConvGeometry(hop=320, receptive_field=400)


def peaked(labels, columns=ALPHA.size, sharp=8.0):
    """Emissions whose best frame-by-frame label is ``labels`` (the star column stays 0, as MMS appends it)."""
    known = torch.tensor([0 if lab == STAR else lab for lab in labels])
    lp = torch.log_softmax(sharp * torch.nn.functional.one_hot(known, columns - 1).float(), -1)
    lp = torch.cat([lp, torch.zeros(len(labels), 1)], 1)
    for t, lab in enumerate(labels):
        if lab == STAR:  # audio the model has no character for: nothing stands out, the star takes it
            lp[t, :-1] = -np.log(columns - 1)
    return lp


def frame_labels(spec):
    """``[(label, frames), ...]`` → one label per frame."""
    return [lab for lab, n in spec for _ in range(n)]


def test_targets_normalise_star_and_delimit():
    tg = make_targets("Hello, wörld! Ça‽ 日本", ALPHA)
    assert tg.words == ("hello", "wörld", "ça", "日本")  # docs/spec.md §3 aligned text
    c = VOCAB
    assert tg.tokens == (c["h"], c["e"], c["l"], c["l"], c["o"], D, c["w"], STAR, c["r"], c["l"], c["d"], D,
                         STAR, c["a"], D, STAR)  # one star per run of unknown characters, never a silent drop
    assert tg.word_tokens == ((0, 4), (6, 10), (12, 13), (15, 15)) and tg.unknown == 4
    upper = Alphabet.of({"<pad>": 0, "|": 1, "A": 2, "B": 3, "'": 4}, blank=0)
    assert make_targets("ab b'a", upper).tokens == (2, 3, 1, 3, 4, 2)
    assert min_frames([5, 5, 6, 6, 6]) == 8


def test_viterbi_known_path_blanks_repeats_and_a_missing_character():
    text = "hello wörld"
    tg = make_targets(text, ALPHA)
    c = VOCAB
    spec = [(B, 3), (c["h"], 2), (c["e"], 1), (B, 1), (c["l"], 2), (B, 2), (c["l"], 1), (c["o"], 3), (B, 2),
            (D, 1), (B, 1), (c["w"], 1), (STAR, 4), (c["r"], 1), (B, 1), (c["l"], 2), (c["d"], 1), (B, 4)]
    labels = frame_labels(spec)
    # The state the path must take at each frame: each non-blank entry of spec is the next target (state 2k+1),
    # a blank after target k is state 2k+2.
    want, k = [], -1
    for lab, n in spec:
        if lab != B:
            k += 1
            assert tg.tokens[k] == lab
        want += [2 * k + 1 if lab != B else 2 * k + 2] * n
    lp = peaked(labels)
    path = forced_align(lp[None], torch.tensor([tg.tokens]), torch.tensor([len(labels)]),
                        torch.tensor([len(tg.tokens)]))[0]
    assert path.states.tolist() == want
    (al,) = align_emissions([lp], [tg], 0.02, blank=B)
    assert al.words == ("hello", "wörld")
    np.testing.assert_allclose(al.starts, [3 * 0.02, 19 * 0.02])
    np.testing.assert_allclose(al.ends, [15 * 0.02, 29 * 0.02])
    assert al.unknown == 1 and al.score < 0


def test_viterbi_batch_equals_one_by_one_and_brute_force():
    torch.manual_seed(0)
    lps = torch.randn(3, 9, 6).log_softmax(-1)
    tgs, ins = [[1, 2, 2], [3], [4, 1, 4]], [9, 5, 7]
    tp = torch.zeros(3, 3, dtype=torch.long)
    for i, t in enumerate(tgs):
        tp[i, : len(t)] = torch.tensor(t)
    batch = forced_align(lps, tp, torch.tensor(ins), torch.tensor([len(t) for t in tgs]))
    for i, t in enumerate(tgs):
        alone = forced_align(lps[i: i + 1, : ins[i]], torch.tensor([t]), torch.tensor([ins[i]]),
                             torch.tensor([len(t)]))[0]
        assert alone.states.tolist() == batch[i].states.tolist() == _brute(lps[i, : ins[i]], t)


def _brute(lp, tg):
    """The best CTC path by enumeration (small cases only)."""
    ext = [0 if s % 2 == 0 else tg[s // 2] for s in range(2 * len(tg) + 1)]
    best = (-np.inf, None)

    def rec(t, s, acc, path):
        nonlocal best
        acc, path = acc + float(lp[t, ext[s]]), path + [s]
        if t == len(lp) - 1:
            if s >= len(ext) - 2 and acc > best[0]:
                best = (acc, path)
            return
        for d in (0, 1, 2):
            n = s + d
            if n < len(ext) and (d < 2 or (n % 2 == 1 and ext[n] != ext[n - 2])):
                rec(t + 1, n, acc, path)

    rec(0, 0, 0.0, [])
    rec(0, 1, 0.0, [])
    return best[1]


def _framewise_logits(x, mask):
    """A 'model' with wav2vec2's frame geometry whose frame j emits the label written in its first sample."""
    n = (x.shape[1] - GEOM.receptive_field) // GEOM.hop + 1
    labels = x[:, : n * GEOM.hop: GEOM.hop].round().long()
    return 8.0 * torch.nn.functional.one_hot(labels, ALPHA.size - 1).float()


def test_windows_keep_frame_offsets_across_a_boundary():
    """Emissions made in 0.2 s windows (10 frames) with context equal the whole file's; a word that straddles a
    window boundary gets the exact times."""
    c = VOCAB
    spec = [(B, 7), (c["c"], 2), (c["a"], 2), (B, 1), (c["t"], 1), (D, 2), (c["s"], 3), (c["a"], 2), (c["t"], 2),
            (B, 3)]
    labels = frame_labels(spec)
    wav = np.repeat(np.array(labels + [0], np.float32), GEOM.hop)[: (len(labels) - 1) * GEOM.hop + 400]
    assert GEOM.num_frames(len(wav)) == len(labels)
    whole = emissions_in_windows([wav], _framewise_logits, GEOM, 10**9, 0, 10**9, True, ALPHA.size)[0]
    for window, context in ((10 * 320, 0), (10 * 320, 2 * 320), (7 * 320, 3 * 320)):
        got = emissions_in_windows([wav, wav[:5000]], _framewise_logits, GEOM, window, context, 10**9, True,
                                   ALPHA.size)
        torch.testing.assert_close(got[0], whole)
        assert got[1].shape[0] == GEOM.num_frames(5000)
    (al,) = align_emissions([whole], [make_targets("cat sat", ALPHA)], 0.02, blank=B)
    np.testing.assert_allclose(al.starts, [0.14, 0.30])  # "cat" crosses the frame-10 boundary
    np.testing.assert_allclose(al.ends, [0.26, 0.44])


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_model_emissions_batched_equal_alone(norm, tmp_path):
    """Loaded by path as a user's folder; a padded batch (layer norm: masked) or equal-length-only batches (group
    norm, which normalises over time) give each file the emissions it gets alone, windows included."""
    from megatron_spirit.align.model import CtcModel, save_random_ctc

    extra = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if norm == "layer" else {}
    model = CtcModel(save_random_ctc(tmp_path / "m", **extra), device="cpu", window_seconds=0.5,
                     context_seconds=0.1)
    assert model.group_norm == (norm == "group") and model.normalize and model.alphabet.star == len(CHAR_VOCAB)
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) for n in (20000, 7000, 12345)]
    batched = model(wavs)
    for w, e in zip(wavs, batched):
        assert e.shape == (model.num_frames(len(w)), len(CHAR_VOCAB) + 1) and torch.all(e[:, -1] == 0)
        torch.testing.assert_close(e, model([w])[0], atol=1e-4, rtol=1e-4)


def test_matches_nemo_viterbi_when_installed():
    aligner_utils = pytest.importorskip("nemo.collections.asr.parts.utils.aligner_utils")
    torch.manual_seed(1)
    C, blank = 7, 6
    lps = torch.randn(2, 12, C).log_softmax(-1)
    tgs, ins = [[1, 2, 2, 3], [4, 4]], [12, 8]
    ext = [[blank] + [x for t in tg for x in (t, blank)] for tg in tgs]
    y = torch.full((2, max(map(len, ext))), C, dtype=torch.long)
    for i, e in enumerate(ext):
        y[i, : len(e)] = torch.tensor(e)
    padded = lps.clone()
    padded[1, ins[1]:] = -3.4e38
    nemo = aligner_utils.viterbi_decoding(padded, y, torch.tensor(ins), torch.tensor([len(e) for e in ext]), "cpu")
    tp = torch.tensor([[1, 2, 2, 3], [4, 4, 0, 0]])
    ours = forced_align(lps, tp, torch.tensor(ins), torch.tensor([4, 2]), blank=blank)
    assert [p.states.tolist() for p in ours] == nemo


# End to end --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    from megatron_spirit.align.model import save_random_ctc

    return save_random_ctc(tmp_path_factory.mktemp("ctc") / "tiny")


@pytest.fixture(scope="module")
def text_manifest(espeak_corpus, tmp_path_factory):
    """The espeak corpus without its alignments, plus records the aligner must reject."""
    recs = [json.loads(line) for line in espeak_corpus.read_text().splitlines()]
    for r in recs:
        r.pop("alignment")
    recs[1]["text"] = "... !!!"
    recs[2]["path"] = "missing.wav"
    recs[3]["text"] = " ".join(["extraordinarily"] * 60)
    del recs[4]["text"]
    recs.append(dict(recs[0]))
    out = tmp_path_factory.mktemp("aligncorpus") / "manifest.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out, recs


def _check_words(al, duration, text):
    from megatron_spirit.data.alignments import check_alignment, normalize_text

    assert list(al.words) == normalize_text(text)
    assert np.all(al.starts >= 0) and np.all(al.ends > al.starts) and al.ends[-1] <= duration + 1e-6
    assert np.all(al.starts[1:] >= al.ends[:-1])  # in order, not overlapping
    check_alignment(al, duration, text)


def test_align_cli_outputs_rejects_and_resume(tiny_ctc, text_manifest, tmp_path, capsys):
    import soundfile as sf

    from megatron_spirit.cli.units import main
    from megatron_spirit.data.alignments import AlignmentSource, read_ctm, read_json_alignments

    manifest, recs = text_manifest
    out = tmp_path / "al"
    args = ["align", "--manifest", str(manifest), "--model", str(tiny_ctc), "--out", str(out), "--device", "cpu",
            "--textgrid"]
    assert main(args) == 0
    assert "4 of 9 records aligned" in capsys.readouterr().out
    rejects = {(r["id"], r["reason"].split(":")[0]) for r in
               map(json.loads, (out / "align-rejects-00000-of-00001.jsonl").read_text().splitlines())}
    assert rejects == {("utt000001", "empty transcript"), ("utt000002", "no audio"),
                       ("utt000003", "transcript longer than the audio can hold"),
                       ("utt000004", "no transcript ('text')"), ("utt000000", "duplicate id")}
    ctm = read_ctm(out / "words-00000-of-00001.ctm")
    js = read_json_alignments(out / "words-00000-of-00001.jsonl")
    tg = AlignmentSource(out / "textgrid-00000-of-00001")
    assert list(ctm) == list(js) == ["utt000000", "utt000005", "utt000006", "utt000007"]
    for r in recs[:8]:
        if r["id"] not in ctm:
            continue
        duration = sf.info(r["path"]).duration
        for al in (ctm[r["id"]], js[r["id"]], tg.get(r["id"])):
            _check_words(al, duration, r["text"])
        np.testing.assert_allclose(ctm[r["id"]].starts, js[r["id"]].starts, atol=1e-3)
        np.testing.assert_allclose(tg.get(r["id"]).ends, js[r["id"]].ends, atol=1e-3)
    summary = json.loads((out / "align-summary-00000-of-00001.json").read_text())
    assert summary["aligned"] == 4 and summary["rejected"] == 5 and summary["mean_score"] < 0
    assert main(args) == 0 and "skipped" in capsys.readouterr().out
    # --min-score rejects on the score; shards partition the records.
    assert main(args[:-1] + ["--out", str(tmp_path / "hi"), "--min-score", "-0.01"]) == 0
    hi = [json.loads(x)["reason"] for x in (tmp_path / "hi" / "align-rejects-00000-of-00001.jsonl").open()]
    assert sum(r.startswith("score below --min-score") for r in hi) == 4
    for i in range(2):
        assert main(args[:-1] + ["--out", str(tmp_path / "sh"), "--shard", f"{i}/2"]) == 0
    got = [set(read_ctm(tmp_path / "sh" / f"words-0000{i}-of-00002.ctm")) for i in range(2)]
    assert got[0] | got[1] == set(ctm)
    assert got[0] & got[1] == {"utt000000"}  # its duplicate record falls in the other shard (as in extract)
    assert main(["align", "--manifest", str(manifest), "--model", str(tmp_path), "--out", str(out)]) == 2
    assert "not a Hugging Face CTC model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["align", "--help"])
    assert e.value.code == 0 and "--min-score" in capsys.readouterr().out


def test_extract_align_one_pass_builds_interleaved_data(tiny_ctc, tiny_hubert_dir, text_manifest, tmp_path,
                                                       spirit_tokenizer_dir, capsys):
    """`extract --align --pack` gives units and alignments from one read of the audio; the pack builds
    interleaved sequences."""
    from megatron_spirit.cli.data import main as data_main
    from megatron_spirit.cli.units import main
    from megatron_spirit.data.alignments import read_ctm

    manifest, _ = text_manifest
    km = tmp_path / "km"
    assert main(["train-hubert-kmeans", "--manifest", str(manifest), "--model", str(tiny_hubert_dir), "--layer",
                 "2", "--k", "8", "--niter", "3", "--out", str(km), "--device", "cpu"]) == 0
    u = tmp_path / "u"
    assert main(["extract", "--manifest", str(manifest), "--out", str(u), "--hubert-model", str(tiny_hubert_dir),
                 "--kmeans", str(km), "--align", str(tiny_ctc), "--device", "cpu", "--pack"]) == 0
    summary = json.loads((u / "align-summary-00000-of-00001.json").read_text())
    assert summary["aligned"] == 4 and set(read_ctm(u / "words-00000-of-00001.ctm")) == \
        {"utt000000", "utt000005", "utt000006", "utt000007"}
    first = (u / "words-00000-of-00001.ctm").read_text()
    # Units done but alignments not (e.g. --align added later): a re-run aligns in its own pass, the same words.
    (u / "align-summary-00000-of-00001.json").unlink()
    (u / "words-00000-of-00001.ctm").unlink()
    assert main(["extract", "--manifest", str(manifest), "--out", str(u), "--hubert-model", str(tiny_hubert_dir),
                 "--kmeans", str(km), "--align", str(tiny_ctc), "--device", "cpu"]) == 0
    assert "already done" in capsys.readouterr().out
    assert (u / "words-00000-of-00001.ctm").read_text() == first
    out = tmp_path / "inter"
    assert data_main(["build", "--kind", "interleaved", "--input", str(u / "units-00000-of-00001.spiritpack"),
                      "--tokenizer", str(spirit_tokenizer_dir), "--out", str(out), "--flavor", "base",
                      "--text-span", "1,2", "--speech-span", "1,2", "--no-progress"]) == 0
    built = json.loads(next(tmp_path.glob("inter*.summary.json")).read_text())
    assert built["documents"] == 4 and built["text_tokens"] > 0 and built["speech_tokens"] > 0


def test_sbatch_runs_an_array_task_outside_slurm(tiny_ctc, text_manifest, tmp_path):
    """slurm/align.sbatch: valid bash, names its resources; array task 3 of tasks 2-3 aligns shard 1/2."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "slurm" / "align.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    opts = {m.group(1) for m in re.finditer(r"^#SBATCH --([\w-]+)", script.read_text(), re.M)}
    assert {"array", "gres", "cpus-per-task", "mem", "time", "requeue", "signal", "output"} <= opts
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "2",
           "SPIRIT_PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "EXTRA_ARGS": "--device cpu"}
    r = subprocess.run(["bash", str(script), str(text_manifest[0]), str(tmp_path / "a"), str(tiny_ctc)], env=env,
                       capture_output=True, text=True, cwd=script.parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "align shard 1/2: 4 of 5 records aligned" in r.stdout
    assert (tmp_path / "a" / "align-summary-00001-of-00002.json").is_file()
    bad = subprocess.run(["bash", str(script), "one-arg"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
