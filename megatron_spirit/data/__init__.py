"""Training data: word alignments, interleaving, sequences, indexed-dataset writing, statistics and the mixture."""
