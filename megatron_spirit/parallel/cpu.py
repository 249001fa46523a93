"""Run megatron-core 0.16.1's own code paths on a machine without CUDA (CPU, gloo, fp32).

megatron-core is written for GPUs and assumes CUDA in a handful of places on the paths we use. Rather than
re-implementing any layer, schedule or optimizer, this module bridges exactly those assumptions, and only
when CUDA is absent (``enable()`` does nothing on a GPU machine). The same GPTModel, DDP, distributed
optimizer and ``get_forward_backward_func`` schedules then run in both worlds. Measured facts behind each
entry: ``docs/notes/megatron-core-on-cpu.md``.

One explicit switch per process entry, never a side effect of library code: the CLI mains and a test that
runs megatron-core in its own process use ``with cpu.compat():`` (undone on exit, so a caller's process is left
as it was); the launcher's rank entry (``parallel.launch``) calls ``enable()``. Library code that needs the
mode (``runtime.init_distributed``, ``local_group``, ``seed_model_parallel_rng``) calls ``require()``, which
names the missing switch instead of failing deep inside megatron-core.

Scope of the mode (item 2/3): torch keeps function modes per thread, and disables a mode while its own
handler runs — so it covers calls made by the thread that called ``enable()``, but not calls made from
inside a dispatched function (e.g. the Python autograd backward started by ``Tensor.backward``) or from other
threads. On the paths we run (GPTModel, DDP, distributed optimizer, 1F1B / interleaved schedules, SP)
those places only use ``torch.cuda.current_device()``, which is patched process-wide (item 1); the parallel
equivalence tests exercise all of them.

Every assumption covered, where it is met, and what this module does about it:

1. ``torch.cuda.current_device()`` — rotary embedding ``get_emb``, tensor-parallel communication buffers
   (``tensor_parallel/mappings.py``, ``layers.py``), pipeline p2p receive buffers, DDP grad buffers,
   optimizer constructors, dist-ckpt finalize. → patched to return ``torch.device("cpu")``.
2. Literal ``device="cuda"`` / ``device=0`` / ``Tensor.cuda()`` — the default causal mask
   (``transformer/utils.py``, only when no mask is passed), ``total_num_tokens`` in every pipeline schedule
   (also PP=1), ``torch.tensor(..., device='cuda')`` in the optimizers. → a ``TorchFunctionMode``
   (``CudaToCpuMode``) rewrites cuda devices to ``cpu`` in every torch call and makes ``Tensor.cuda()``
   return the tensor itself.
3. ``tensor.type() == 'torch.cuda.FloatTensor'`` asserts — grad clipping (``optimizer/clip_grads.py``),
   the distributed optimizer's parameter wrapping, mixed-precision optimizer groups. → the same mode
   answers ``Tensor.type()`` (no arguments) with the cuda type name (``torch.cuda.FloatTensor`` …), so the
   checks take the branch they take on GPU. Disabling clipping instead is not acceptable for training.
4. ``torch.cuda.synchronize()`` — p2p with ``batch_p2p_sync=True``, DDP buffer offload, dist-ckpt save.
   → a no-op (CPU work is synchronous).
5. CUDA RNG state tracker — ``tensor_parallel.model_parallel_cuda_manual_seed`` calls
   ``torch.cuda.get_rng_state``; without the tracker seeded, attention fails with
   "cuda rng state model-parallel-rng is not added". → ``seed_model_parallel_rng`` seeds megatron's
   inference RNG tracker (``inference_rng_tracker=True, force_reset_rng=True``), which keeps CPU states.
   Dropout regions then draw from the CPU generator (our configs use dropout 0, so results do not depend
   on it).
6. Sequence parallel with the local spec — ``WrappedTorchNorm`` refuses ``sequence_parallel``. This is
   not CPU-only (a GPU without Transformer Engine or apex meets it too), so the fix lives with the spec:
   ``megatron_spirit.model.specs.SequenceParallelRMSNorm`` (torch's RMSNorm with its weight marked
   ``sequence_parallel`` so ``finalize_model_grads`` all-reduces its grads across TP).
7. Fused kernels (masked softmax, bias-SwiGLU, RoPE fusion, gradient-accumulation fusion) need CUDA:
   ``model.config.transformer_config`` turns them off when CUDA is absent; nothing is patched for them.
8. Batched pipeline p2p (``batch_p2p_comm=True``, megatron's default) relies on NCCL's grouped send/recv.
   With gloo, the interleaved (virtual-pipeline) schedule at PP=2 — where the previous and next stage are
   the same peer — received activations out of order (losses off by ~3e-4, measured here).
   → ``model.config.transformer_config`` sets ``batch_p2p_comm=False`` when CUDA is absent (a megatron
   option, nothing patched). Item 4's ``batch_p2p_sync`` only applies to batched comm.
9. Activation recompute (megatron's ``tensor_parallel.checkpoint``, used by full and selective recompute)
   saves and restores the CUDA generator's state next to the CPU one (``_get_cuda_rng_state`` /
   ``_set_cuda_rng_state`` in ``tensor_parallel/random.py``). → without CUDA there is no such generator:
   those two helpers return an empty state and restore nothing. The CPU generator (which drives dropout on
   CPU) and megatron's tracker states are still saved and restored by megatron itself, so recomputed
   forwards draw the same numbers. Patched once megatron-core's module is loaded (by ``enable`` after the
   import, else by ``seed_model_parallel_rng``, which every model set-up calls).
10. dist-ckpt save spawns a ``multiprocessing.Manager`` that re-imports ``__main__``: scripts that save must
   have an ``if __name__ == "__main__":`` guard (not patchable; documented here for callers).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

#: Tensor.type() answers on GPU, keyed by the CPU answer.
_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
    "torch.LongTensor": "torch.cuda.LongTensor",
    "torch.IntTensor": "torch.cuda.IntTensor",
    "torch.ByteTensor": "torch.cuda.ByteTensor",
    "torch.BoolTensor": "torch.cuda.BoolTensor",
}
_CPU = torch.device("cpu")
_lock = threading.Lock()
_mode: "CudaToCpuMode | None" = None
_saved: dict = {}


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int means a CUDA ordinal to torch.
    return isinstance(device, int) and not isinstance(device, bool)


def _map(device):
    return _CPU if _is_cuda(device) else device


class CudaToCpuMode(TorchFunctionMode):
    """Assumptions 2 and 3: cuda devices become cpu; ``Tensor.type()`` reports cuda type names."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if "device" in kwargs:
            kwargs["device"] = _map(kwargs["device"])
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]) and not isinstance(args[1], bool):
            args = (args[0], _CPU) + tuple(args[2:])
        return func(*args, **kwargs)


def _no_cuda_rng_state(device="cuda", clone=False, graph_safe=False):
    return torch.empty(0, dtype=torch.uint8)


def _restore_no_cuda_rng_state(new_state, device=-1, graph_safe=False):
    return None


def _patch_megatron_rng() -> None:
    """Item 9, once megatron-core's tensor_parallel.random is imported."""
    module = sys.modules.get("megatron.core.tensor_parallel.random")
    if module is None or _mode is None or "megatron_rng" in _saved:
        return
    _saved["megatron_rng"] = (module, module._get_cuda_rng_state, module._set_cuda_rng_state)
    module._get_cuda_rng_state = _no_cuda_rng_state
    module._set_cuda_rng_state = _restore_no_cuda_rng_state


def _current_device():
    return _CPU


def _synchronize(device=None):
    return None


def cuda_absent() -> bool:
    return not torch.cuda.is_available()


def enable() -> bool:
    """Bridge the CUDA assumptions in this process if CUDA is absent; idempotent. Returns whether active.

    The mode is pushed once for the whole process (not a ``with`` block), because megatron-core meets the
    assumptions deep inside model construction, schedules and optimizer steps.
    """
    global _mode
    if not cuda_absent():
        return False
    with _lock:
        if _mode is None:
            _saved["current_device"] = torch.cuda.current_device
            _saved["synchronize"] = torch.cuda.synchronize
            torch.cuda.current_device = _current_device
            torch.cuda.synchronize = _synchronize
            _mode = CudaToCpuMode()
            _mode.__enter__()
        _patch_megatron_rng()
    return True


def disable() -> None:
    """Undo ``enable`` (for tests that need the untouched behaviour)."""
    global _mode
    with _lock:
        if _mode is None:
            return
        _mode.__exit__(None, None, None)
        _mode = None
        torch.cuda.current_device = _saved.pop("current_device")
        torch.cuda.synchronize = _saved.pop("synchronize")
        if "megatron_rng" in _saved:
            module, get, set_ = _saved.pop("megatron_rng")
            module._get_cuda_rng_state, module._set_cuda_rng_state = get, set_


def enabled() -> bool:
    return _mode is not None


@contextlib.contextmanager
def compat() -> Iterator[bool]:
    """``enable()`` for the body, then undo it unless it was already on (yields whether the mode is active)."""
    switched_on = cuda_absent() and not enabled()
    active = enable()
    try:
        yield active
    finally:
        if switched_on:
            disable()


def require(what: str) -> None:
    """Raise if CUDA is absent and the process entry did not switch the mode on."""
    if cuda_absent() and not enabled():
        raise RuntimeError(
            f"{what} runs megatron-core, and this machine has no CUDA: switch on megatron_spirit.parallel.cpu at "
            "the process entry (cpu.enable(), or `with cpu.compat():`), as the spirit-* commands do"
        )


def seed_model_parallel_rng(seed: int) -> None:
    """Assumption 5: seed megatron's model-parallel RNG tracker, with CPU states when CUDA is absent."""
    from megatron.core import tensor_parallel

    if cuda_absent():
        require("seeding megatron-core's RNG tracker")
        with _lock:
            _patch_megatron_rng()  # item 9, now that megatron-core is imported
        tensor_parallel.model_parallel_cuda_manual_seed(seed, inference_rng_tracker=True, force_reset_rng=True)
    else:
        tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)
