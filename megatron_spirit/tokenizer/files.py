"""The file names of a SpiRit tokenizer folder: what building writes and loading reads."""

TOKENIZER_MODEL = "tokenizer.model"
SPIRIT_META = "spirit_tokenizer.json"
