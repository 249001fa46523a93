"""Speech → discrete units: audio I/O, HuBERT features, quantizers, pitch, style, corpus extraction."""
