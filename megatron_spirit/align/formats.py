"""Word alignments written in the forms ``data.alignments`` reads: CTM, JSONL word lists, Praat TextGrid."""
from __future__ import annotations

import json
import math

from .aligner import Aligned


def ctm_lines(rid: str, al: Aligned) -> str:
    """``utt 1 start duration word confidence`` per word (NeMo's CTM; confidence = exp(mean frame log-prob))."""
    return "".join(f"{rid} 1 {s:.3f} {e - s:.3f} {w} {math.exp(c):.3f}\n"
                   for w, s, e, c in zip(al.words, al.starts.tolist(), al.ends.tolist(), al.word_scores.tolist()))


def jsonl_line(rid: str, al: Aligned) -> str:
    words = [{"word": w, "start": round(s, 3), "end": round(e, 3)}
             for w, s, e in zip(al.words, al.starts.tolist(), al.ends.tolist())]
    return json.dumps({"id": rid, "words": words, "score": round(al.score, 4), "unknown_chars": al.unknown},
                      ensure_ascii=False) + "\n"


def textgrid(al: Aligned, duration: float) -> str:
    """A long-format TextGrid with one ``words`` tier; gaps between words are empty intervals (as MFA writes)."""
    iv: list[tuple[float, float, str]] = []
    t = 0.0
    for w, s, e in zip(al.words, al.starts.tolist(), al.ends.tolist()):
        s, e = round(s, 3), round(e, 3)
        if s > t:
            iv.append((t, s, ""))
        iv.append((s, e, w))
        t = e
    end = max(round(duration, 3), t)
    if end > t:
        iv.append((t, end, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "words"', "        xmin = 0", f"        xmax = {end}",
             f"        intervals: size = {len(iv)}"]
    for k, (a, b, w) in enumerate(iv, 1):
        text = w.replace('"', '""')
        lines += [f"        intervals [{k}]:", f"            xmin = {a}", f"            xmax = {b}",
                  f'            text = "{text}"']
    return "\n".join(lines) + "\n"
