"""How a command reports the errors it expects: one line on stderr naming the command, exit code 2, no traceback."""
from __future__ import annotations

import sys
from typing import Callable


def run_reporting(prog: str, run: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """``run()``'s exit code, or 2 after printing ``prog: error: …`` for one of ``errors``."""
    try:
        return run()
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
