"""Preemption: SIGTERM/SIGUSR1 ask for a checkpoint at the next step boundary, then an exit Slurm can requeue;
Ctrl-C (SIGINT) asks for the same save, then an exit that is not requeued, and a second Ctrl-C stops at once.

A handler only sets a flag; the loop checks it between steps (never mid-collective). Every rank must agree to
stop at the same step, so the flag is reduced across ranks with MAX before it is acted on. ``torchrun`` passes
a SIGTERM on to each worker's whole process group: the checkpoint's helper processes ignore it and die with
their rank instead (:mod:`..parallel.helpers`), so the save the signal asks for completes.
"""
from __future__ import annotations

import signal

#: Exit code after a signal-triggered save. The sbatch script requeues the job when it sees it.
REQUEUE_EXIT_CODE = 3
#: Exit code after a Ctrl-C-triggered save (the shell's code for SIGINT): the user stopped the run, no requeue.
INTERRUPT_EXIT_CODE = 130


class StopRequest:
    """Install handlers for ``signals`` and remember the first one received."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)):
        self.received: int | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.received is None:
            self.received = signum
        if signum == signal.SIGINT:  # the next Ctrl-C is Python's KeyboardInterrupt: a way out of a stuck save
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def agreed(self, group=None) -> int:
        """The exit code every rank stops with — :data:`INTERRUPT_EXIT_CODE` if any rank got a Ctrl-C, else
        :data:`REQUEUE_EXIT_CODE` if any got another signal — or 0 to go on (a collective: call it on all ranks)."""
        import torch
        import torch.distributed as dist

        want = 0 if self.received is None else 2 if self.received == signal.SIGINT else 1
        flag = torch.tensor([want], dtype=torch.int32)
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend(group) == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return (0, REQUEUE_EXIT_CODE, INTERRUPT_EXIT_CODE)[int(flag.item())]

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
