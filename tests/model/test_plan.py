"""The spirit-plan estimator: its memory arithmetic, its choices and its command line."""
import pytest

from megatron_spirit.cli.plan import main
from megatron_spirit.model import plan as P
from megatron_spirit.model.config import get_model_config
from megatron_spirit.tokenizer.vocab import SpiritVocab

GiB = 1024**3
VOCAB = SpiritVocab(32000).full_size


def test_weights_grads_optimizer_bytes():
    m = get_model_config("spirit-7b")
    n = m.num_parameters(32768)
    assert P.stage_parameters(m, 32768, 1, 1) == n
    mem = P.memory(m, 32768, 4096, 1, 4, tp=1, pp=1, dp=64, recompute=None, overhead_gib=0)
    assert mem.params == 2 * n and mem.grads == 4 * n and mem.optimizer == pytest.approx(12 * n / 64)
    # TP halves everything that is split; the distributed optimizer divides its states by DP.
    mem2 = P.memory(m, 32768, 4096, 1, 8, tp=2, pp=1, dp=32, recompute=None, overhead_gib=0)
    assert mem2.params == pytest.approx(mem.params / 2) and mem2.activations == pytest.approx(mem.activations / 2)


def test_activation_formula_and_recompute_order():
    m = get_model_config("spirit-7b")
    h, f = 4096, 11008
    per_layer = P.activation_bytes_per_layer(m, 4096, 1, 1, None)
    assert per_layer == 2 * 4096 * (6 * h + 2 * h + 3 * f)  # MHA: g·d = h
    sel = P.activation_bytes_per_layer(m, 4096, 1, 1, "selective")
    full = P.activation_bytes_per_layer(m, 4096, 1, 1, "full")
    assert full < sel < per_layer
    assert P.activation_bytes_per_layer(m, 4096, 4, 2, None) == pytest.approx(2 * per_layer)


def test_pipeline_keeps_pp_microbatches_in_flight_on_the_first_stage():
    m = get_model_config("spirit-7b")
    one = P.memory(m, 32768, 4096, 1, 16, tp=1, pp=1, dp=8, recompute=None, overhead_gib=0).activations
    four = P.memory(m, 32768, 4096, 1, 16, tp=1, pp=4, dp=2, recompute=None, overhead_gib=0).activations
    assert four == pytest.approx(one / 4 * 4)  # a quarter of the layers, four micro-batches in flight


def test_recommendation_for_the_paper_setup_fits_and_uses_all_gpus():
    m = get_model_config("spirit-7b")
    cluster = P.Cluster(gpus=64, memory_gib=80)
    best = P.recommend(m, 4096, 256, cluster, VOCAB)
    assert best.fits and best.tp * best.pp * best.dp == 64
    assert best.dp * best.micro_batch * best.num_microbatches == 256
    assert best.memory.total <= 0.9 * 80 * GiB
    everything = P.plans(m, 4096, 256, cluster, VOCAB, include_unfit=True)
    # The paper's micro-batch 4 without recompute does not fit at TP1; it does with full recompute.
    by = {(p.tp, p.pp, p.micro_batch, p.recompute): p for p in everything}
    assert not by[(1, 1, 4, None)].fits and by[(1, 1, 4, "full")].fits
    assert by[(1, 1, 4, "full")].step_flops == pytest.approx(by[(1, 1, 4, None)].step_flops * 4 / 3, rel=0.02)
    assert all(p.tokens_per_second <= best.tokens_per_second for p in everything if p.fits)


def test_nothing_fits_is_an_error():
    with pytest.raises(ValueError, match="no TP/PP"):
        P.recommend(get_model_config("llama2-70b"), 4096, 256, P.Cluster(gpus=8, memory_gib=80), VOCAB)


def test_cli_prints_the_recommendation(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "recommended for spirit-7b on 64×80 GiB" in out and "memory per GPU" in out
    assert main(["--model", "llama2-70b", "--gpus", "8"]) == 2
    assert main(["--gpus", "0"]) == 2
    assert "error" in capsys.readouterr().err
