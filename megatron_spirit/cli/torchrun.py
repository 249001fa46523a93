"""spirit-torchrun: torchrun, except that a SIGTERM the workers answered with a checkpoint exits 3.

torchrun (torch.distributed.run) forwards a SIGTERM to its workers, waits for them, and then re-raises the signal:
its own exit code is 1 even when every worker saved and exited with the requeue code. A scheduler or a wrapper
script that requeues on 3 sees 1. This entry runs the very same torchrun; each worker reports its exit code in a
file this process names (``SPIRIT_EXIT_REPORT``), and when torchrun ends on a signal it exits with the workers'
common code if they all reported one, else 1 as torchrun would.

    spirit-torchrun --nproc-per-node 8 -m megatron_spirit.cli.train CONFIG.yaml [key=value ...]
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

#: The environment variable naming the folder where each worker writes ``rank-N`` with its exit code.
EXIT_REPORT_ENV = "SPIRIT_EXIT_REPORT"


def report_exit(code: int) -> None:
    """Called by a worker's entry just before it exits; a no-op outside spirit-torchrun."""
    folder = os.environ.get(EXIT_REPORT_ENV)
    if folder:
        rank = os.environ.get("RANK", "0")
        tmp = Path(folder) / f".rank-{rank}.tmp"
        tmp.write_text(f"{int(code)}\n")
        tmp.replace(Path(folder) / f"rank-{rank}")


def _reported(folder: Path) -> set[int]:
    return {int(p.read_text()) for p in folder.glob("rank-*")}


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), "\n\ntorchrun's own arguments follow.\n")
        return torchrun.main(["--help"]) or 0
    with tempfile.TemporaryDirectory(prefix="spirit-exit-") as folder:
        os.environ[EXIT_REPORT_ENV] = folder  # inherited by the workers torchrun starts
        try:
            torchrun.main(argv)
            return 0
        except SignalException as e:
            codes = _reported(Path(folder))
            if len(codes) == 1 and codes != {0}:
                code = codes.pop()
                print(f"spirit-torchrun: {e.sigval.name} received; the workers exited with {code}", file=sys.stderr)
                return code
            print(f"spirit-torchrun: {e.sigval.name} received; worker exit codes {sorted(codes) or 'unknown'}",
                  file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
