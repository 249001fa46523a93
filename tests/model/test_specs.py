"""Spec choice on this machine and the compatibility module's effects (in-process, undone afterwards)."""
import pytest
import torch

from megatron_spirit.model import specs
from megatron_spirit.parallel import cpu


def test_cpu_machine_chooses_local_sdpa():
    if torch.cuda.is_available():
        pytest.skip("this check is for machines without a GPU")
    assert not specs.transformer_engine_usable()
    assert specs.choose_spec() == specs.SPEC_LOCAL_SDPA
    assert specs.choose_spec("local+unfused") == specs.SPEC_LOCAL_UNFUSED
    with pytest.raises(ValueError, match="transformer_engine"):
        specs.choose_spec("transformer_engine")
    with pytest.raises(ValueError, match="unknown layer spec"):
        specs.choose_spec("flash9")


def test_cpu_compat_maps_cuda_assumptions_and_undoes_them():
    if torch.cuda.is_available():
        assert not cpu.enable()
        return
    import megatron.core.tensor_parallel.random as mrandom

    original = mrandom._get_cuda_rng_state
    was = cpu.enabled()
    assert cpu.enable()
    try:
        x = torch.zeros(3, device="cuda")
        assert x.device.type == "cpu"
        assert x.cuda() is x
        assert torch.ones(2).to("cuda").device.type == "cpu"
        assert torch.tensor([1.0], device=0).device.type == "cpu"
        assert x.type() == "torch.cuda.FloatTensor"
        assert x.bfloat16().type() == "torch.cuda.BFloat16Tensor"
        assert x.type(torch.float64).dtype == torch.float64  # conversions untouched
        assert torch.cuda.current_device() == torch.device("cpu")
        assert torch.cuda.synchronize() is None
        assert torch.empty(2, device=torch.cuda.current_device()).device.type == "cpu"
        # activation recompute's CUDA generator save/restore (item 9)
        assert mrandom._get_cuda_rng_state().numel() == 0
        assert mrandom._set_cuda_rng_state(torch.empty(0, dtype=torch.uint8)) is None
    finally:
        if not was:
            cpu.disable()
    if not was:
        assert mrandom._get_cuda_rng_state is original
        assert torch.zeros(1).type() == "torch.FloatTensor"
        with pytest.raises((RuntimeError, AssertionError)):
            torch.zeros(1, device="cuda")


def test_library_code_asks_for_the_switch_instead_of_flipping_it():
    if torch.cuda.is_available():
        pytest.skip("the CUDA-less mode is a no-op with a GPU")
    from megatron_spirit.parallel.local_group import local_group
    from megatron_spirit.parallel.runtime import init_distributed

    if cpu.enabled():
        pytest.skip("this process switched the mode on for good")
    with pytest.raises(RuntimeError, match="switch on megatron_spirit.parallel.cpu"):
        init_distributed()
    with pytest.raises(RuntimeError, match="switch on megatron_spirit.parallel.cpu"):
        with local_group():
            pass
    assert not cpu.enabled() and not torch.distributed.is_initialized()
    with cpu.compat() as active:
        assert active and cpu.enabled()
        with cpu.compat():  # nested: the outer switch stays on
            pass
        assert cpu.enabled()
    assert not cpu.enabled()
