"""Word alignment: CTC forced alignment of transcripts to audio → word CTM / JSONL / TextGrid
(``spirit-units align``).

Sits between ``speech`` (audio, manifest) and ``data`` (the alignment readers and SPEC §3's word normalisation).
"""
