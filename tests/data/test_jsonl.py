"""The JSONL fast path equals json.loads (long int lists as arrays) and never misreads a string."""
import json
import random

import numpy as np
import pytest

from megatron_spirit.data.jsonl import loads
from megatron_spirit.data.batch import units_record

INTS = list(range(3, 40))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


@pytest.mark.parametrize(
    "obj, arrays",
    [
        ({"id": "a", "units": {"hubert": {"rate": 25, "units": INTS, "starts": INTS, "frames": 99}}}, 2),
        ({"id": "a", "units": INTS}, 1),
        ({"id": "a", "text": f"quoted {INTS} list", "units": INTS}, 1),  # a list inside a string stays text
        ({"id": "a", "t": 'say "hi" ' + str(INTS), "units": INTS}, 0),  # escaped quotes: plain json
        ({"id": "a", "t": "caf\u00e9\n" + str(INTS), "units": INTS}, 1),  # other escapes are fine
        ({"id": "a", "f": [x + 0.5 for x in INTS], "units": INTS}, 1),  # floats stay floats
        ({"id": "a", "nested": [INTS, INTS]}, 0),  # lists in lists are left to json
        ({"id": "a", "neg": [-x for x in INTS]}, 1),
        ({"id": "a", "short": [1, 2, 3]}, 0),
    ],
)
def test_fast_path_equals_json(obj, arrays):
    line = json.dumps(obj)
    got = loads(line)
    assert _plain(got) == json.loads(line)
    n = 0
    stack = [got]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack += list(x.values())
        elif isinstance(x, np.ndarray):
            n += 1
            assert x.dtype == np.int64
    assert n == arrays


def test_random_lines_and_errors():
    rng = random.Random(1)
    for _ in range(200):
        obj = {"id": str(rng.random()), "units": {"hubert": {"units": [rng.randrange(501) for _ in range(rng.randint(0, 60))]}},
               "text": "".join(rng.choice("ab [],0123\"{}:\\é\n") for _ in range(rng.randint(0, 80)))}
        line = json.dumps(obj, separators=(",", ":") if rng.random() < 0.5 else (", ", ": "))
        assert _plain(loads(line)) == json.loads(line)
    for bad in ['{"units": [1,2,3,4,5,6,7,8,9,10,11,12,13,,14,15,16,17,18,19,20]}', '{"units": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20}']:
        with pytest.raises(json.JSONDecodeError):
            loads(bad)


def test_plain_unit_lists_are_accepted():
    for units in ([5, 5, 7, 9, 9], "5 5 7 9 9", np.array([5, 5, 7, 9, 9])):
        rec = units_record({"id": "x", "units": units}, "m.jsonl:1")
        assert rec.merged("base").string() == "[Hu5][Hu7][Hu9]" and rec.duration == 0
    rec = units_record({"id": "x", "units": {"hubert": [1, 1, 2], "pitch": [3], "style": [4]}}, "m.jsonl:1")
    assert rec.merged("expressive").string() == "[St4][Pi3][Hu1][Hu2]"
