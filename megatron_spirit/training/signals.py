"""Preemption: SIGTERM/SIGUSR1 ask for a checkpoint at the next step boundary, then an exit Slurm can requeue.

A handler only sets a flag; the loop checks it between steps (never mid-collective). Every rank must agree to
stop at the same step, so the flag is reduced across ranks with MAX before it is acted on. ``torchrun`` passes
a SIGTERM on to each worker's whole process group: the checkpoint's helper processes ignore it and die with
their rank instead (:mod:`..parallel.helpers`), so the save the signal asks for completes.
"""
from __future__ import annotations

import signal

#: Exit code after a signal-triggered save. The sbatch script requeues the job when it sees it.
REQUEUE_EXIT_CODE = 3


class StopRequest:
    """Install handlers for ``signals`` and remember the first one received."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.received: int | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.received is None:
            self.received = signum

    def agreed(self, group=None) -> bool:
        """True on every rank if any rank received a signal (a collective: call it on all ranks)."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if self.received is not None else 0], dtype=torch.int32)
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend(group) == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
