"""Word alignment: CTC forced alignment of transcripts to audio → word CTM / JSONL / TextGrid
(``spirit-units align``).

Sits between ``speech`` (audio, manifest) and ``data`` (the alignment readers and docs/spec.md §3 word normalisation).
"""
