#!/usr/bin/env python
"""Extend a LLaMA-2 tokenizer with the SpiRit-LM vocabulary (same as `spirit-make-tokenizer`)."""
import sys

from megatron_spirit.cli.make_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
