"""Parse a JSONL record whose long integer lists (unit streams) go straight to numpy.

``json.loads`` makes a Python int per unit and ``np.asarray`` copies them again: most of a speech build's time.
Here each long list of plain integers that is a JSON *value* (after ``:`` or in a list, never inside a string) is
parsed by ``np.fromstring`` and the rest of the line by ``json``; the result equals ``json.loads`` except that
those lists are int64 arrays. Without an escaped quote (``\\"``) every ``"`` delimits a string, so counting quotes
tells whether a bracket is inside one; lines with escaped quotes take the plain path: the fast path never
misreads a string.
"""
from __future__ import annotations

import json

import numpy as np

#: Shorter lists are left to json (not worth the detour).
MIN_CHARS = 40
_MARK = "\ue000np"  # a private-use character: valid JSON, absent from real text


def _restore(obj: dict, arrays: list, left: list[int]) -> None:
    """Put the arrays back, in place, into dict values (where unit lists live); lists are not walked (word lists
    can be long), so a marker inside a list is not replaced and the caller falls back to json."""
    for k, v in obj.items():
        if isinstance(v, dict):
            _restore(v, arrays, left)
        elif isinstance(v, str) and v.startswith(_MARK):
            obj[k] = arrays[int(v[len(_MARK):])]
            left[0] -= 1


def loads(line: str):
    """``json.loads`` with long int lists as int64 arrays (see the module doc)."""
    if '\\"' in line or _MARK in line:  # an escaped quote: string boundaries need a real parser
        return json.loads(line)
    arrays: list[np.ndarray] = []
    parts: list[str] = []
    copied = scanned = quotes = 0
    a = line.find("[")
    while a >= 0:
        b = line.find("]", a)
        if b < 0:
            break
        quotes += line.count('"', scanned, a)
        scanned = a
        body = line[a + 1 : b]
        # A bracket pair with no quote, bracket or brace inside, outside any string: a flat list of numbers.
        if b - a > MIN_CHARS and quotes % 2 == 0 and '"' not in body and "[" not in body and "{" not in body:
            try:
                arr = np.fromstring(body, dtype=np.int64, sep=",")
            except ValueError:  # floats or junk: json decides
                arr = None
            if arr is not None and len(arr) == body.count(",") + 1:
                arrays.append(arr)
                parts += [line[copied:a], f'"{_MARK}{len(arrays) - 1}"']
                copied = b + 1
        a = line.find("[", a + 1)
    if not arrays:
        return json.loads(line)
    parts.append(line[copied:])
    obj = json.loads("".join(parts))
    left = [len(arrays)]
    if isinstance(obj, dict):
        _restore(obj, arrays, left)
    return obj if left[0] == 0 else json.loads(line)
