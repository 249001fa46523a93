#!/usr/bin/env python
"""Build SpiRit-LM training datasets (same as `spirit-data`: build, merge, stats, mixture)."""
import sys

from megatron_spirit.cli.data import main

if __name__ == "__main__":
    sys.exit(main())
