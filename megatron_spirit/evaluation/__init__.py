"""Using a trained model: generation with SpiRit's modality constraints."""
