"""megatron_spirit: train SpiRit-LM-style speech+text language models on megatron-core."""
__version__ = "0.1.0"
