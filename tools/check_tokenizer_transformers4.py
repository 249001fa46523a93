"""Check a SpiRit tokenizer folder under transformers 4.x, side by side with the installed 5.x (docs/spec.md §6).

The project's environment has transformers 5; the released SpiRit-LM code ran on 4.x. This installs a 4.x
transformers into a side folder (``--target``; pip ``--no-index`` from local wheel folders only, ``--wheels``),
builds BASE and EXPRESSIVE tokenizers on a 32000-piece base, and for each canonical string compares, in a child
process that imports the side folder first, the ids of ``AutoTokenizer`` (fast: our ``tokenizer.json``),
``LlamaTokenizerFast`` and ``LlamaTokenizer`` (slow, sentencepiece: what the release's code loads) with
``SpiritTokenizer``'s, and ``decode(encode(s), skip_special_tokens=True)`` with ``s``. Prints every difference;
exit 0 when ``AutoTokenizer`` agrees on all of them (the contract), 1 otherwise.

    python tools/check_tokenizer_transformers4.py --wheels /path/to/wheels --target /tmp/spirit-tf4

Not a test: it needs wheels that are not part of the project's environment.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_WHEELS = ["/opt/pypi/files", "/opt/pypi-more/files", "/opt/wheels"]
DEFAULT_REQUIREMENTS = ["transformers==4.46.3", "tokenizers>=0.20,<0.21", "huggingface_hub>=0.23.2,<1.0", "requests",
                        "urllib3", "idna", "certifi", "charset_normalizer"]

CHILD = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import transformers
from transformers import AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast
from transformers.utils import logging
logging.set_verbosity_error()
cases = json.load(open(sys.argv[1]))
out = {"version": transformers.__version__, "results": []}
for folder, items in cases.items():
    for name, load in (("AutoTokenizer", AutoTokenizer), ("LlamaTokenizerFast", LlamaTokenizerFast),
                       ("LlamaTokenizer", LlamaTokenizer)):
        try:
            tok = load.from_pretrained(folder)
        except Exception as e:
            out["results"].append({"folder": folder, "loader": name, "error": repr(e)[:300]})
            continue
        for s, want in items:
            ids = tok(s)["input_ids"]
            out["results"].append({"folder": folder, "loader": name, "class": type(tok).__name__, "text": s,
                                   "ids_equal": ids == want, "tokens": tok.convert_ids_to_tokens(ids)[:12],
                                   "decoded": tok.decode(ids, skip_special_tokens=True)})
print(json.dumps(out))
"""


def install(target: Path, wheels: list[str], requirements: list[str]) -> None:
    if (target / "transformers").is_dir():
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(target)]
    for w in wheels:
        cmd += ["--find-links", w]
    r = subprocess.run(cmd + requirements, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"installing {' '.join(requirements)} from {', '.join(wheels)} failed (no such local wheels?):\n"
                 f"{r.stderr[-2000:]}")


def build_cases(work: Path) -> dict:
    from megatron_spirit.synth.text import sentences
    from megatron_spirit.tokenizer.build import build_tokenizer
    from megatron_spirit.tokenizer.sentencepiece_bpe import train_sentencepiece
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
    from tests.tokenizer.test_build import CANONICAL

    base = train_sentencepiece(sentences(3000, seed=2), work / "base.model", vocab_size=600, pad_to=32000)
    cases = {}
    for flavor in ("base", "expressive"):
        folder = build_tokenizer(base, work / flavor, flavor)
        tok = SpiritTokenizer(folder)
        texts = [s for s in CANONICAL if flavor == "expressive" or not any(p in s for p in ("[Pi", "[St"))]
        cases[str(folder)] = [(s, tok.encode(s, bos=True)) for s in texts]
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheels", action="append", help=f"local wheel folder(s) (default: {' '.join(DEFAULT_WHEELS)})")
    p.add_argument("--target", default=os.path.join(tempfile.gettempdir(), "spirit-transformers4"),
                   help="side folder for the 4.x packages (reused if it holds transformers)")
    p.add_argument("--requirement", action="append", help="what to install there (default: "
                   + " ".join(DEFAULT_REQUIREMENTS) + ")")
    args = p.parse_args(argv)
    target = Path(args.target)
    install(target, args.wheels or DEFAULT_WHEELS, args.requirement or DEFAULT_REQUIREMENTS)
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_cases(Path(tmp))
        (Path(tmp) / "cases.json").write_text(json.dumps(cases))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]), TOKENIZERS_PARALLELISM="false")
        r = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "cases.json")], capture_output=True,
                           text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"the transformers 4.x check failed:\n{r.stderr[-3000:]}")
        report = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"transformers {report['version']} (from {target})")
    auto_ok = True
    summary: dict[tuple[str, str], list[int]] = {}
    for res in report["results"]:
        flavor = Path(res["folder"]).name
        key = (flavor, res["loader"])
        if "error" in res:
            print(f"  {flavor:10s} {res['loader']}: cannot load: {res['error']}")
            auto_ok &= res["loader"] != "AutoTokenizer"
            continue
        good = res["ids_equal"] and res["decoded"] == res["text"]
        summary.setdefault(key, [0, 0])[0 if good else 1] += 1
        if not good:
            print(f"  {flavor:10s} {res['loader']:18s} ({res['class']}) {res['text']!r}: ids "
                  f"{'equal' if res['ids_equal'] else 'DIFFER ' + ' '.join(res['tokens'])}; decoded {res['decoded']!r}")
            auto_ok &= res["loader"] != "AutoTokenizer"
    for (flavor, loader), (ok, bad) in sorted(summary.items()):
        print(f"{flavor:10s} {loader:18s} {ok} of {ok + bad} canonical strings: same ids and decode(encode(s)) == s")
    return 0 if auto_ok else 1


if __name__ == "__main__":
    sys.exit(main())
