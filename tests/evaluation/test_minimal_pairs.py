"""The demo's toy benchmark pairs: non-words are one vowel away from a corpus word and never a corpus word."""
from megatron_spirit.synth.minimal_pairs import corpus_words, sentence_pairs, stories, word_pairs
from megatron_spirit.synth.text import documents


def test_word_pairs_are_one_vowel_apart_and_never_corpus_words():
    texts = list(documents(200, seed=0))
    known = set(corpus_words(texts))
    pairs = word_pairs(texts, 30, seed=1)
    assert len(pairs) == 30 and pairs == word_pairs(texts, 30, seed=1)  # deterministic
    for w, nw in pairs:
        assert w in known and nw not in known and len(w) == len(nw)
        diff = [(a, b) for a, b in zip(w, nw) if a != b]
        assert len(diff) == 1 and diff[0][0] in "aeiou" and diff[0][1] in "aeiou"


def test_sentence_pairs_swap_two_neighbours_and_stories_scramble_the_ending():
    for good, bad in sentence_pairs(20, seed=2):
        g, b = good.split(), bad.split()
        assert sorted(g) == sorted(b) and g != b
        i = next(k for k in range(len(g)) if g[k] != b[k])
        assert (g[i], g[i + 1]) == (b[i + 1], b[i]) and g[i + 2:] == b[i + 2:]
    for ctx, good, bad in stories(5, seed=3):
        assert ctx.count(".") + ctx.count("!") + ctx.count("?") >= 2
        assert sorted(good.lower().rstrip(".!?").split()) == sorted(bad.lower().rstrip(".").split())
