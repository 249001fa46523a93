#!/usr/bin/env python
"""Same as ``spirit-convert``: HF LLaMA ⇄ megatron-core checkpoint. See ``--help``."""
import sys

from megatron_spirit.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
