"""Install, from the carried wheels, only the distributions this python lacks (no network on the GPU machine).

A wheel is installed when its distribution is not installed, when one of its top-level modules fails to import,
or, for megatron-core, when another version is installed (the project pins 0.16.1). Everything goes into
``--target`` (put it on PYTHONPATH after the repo); the image's own packages are never touched.

    python3 benchmarks/gpu/install.py --wheels .whl --target /tmp/site --report install.json
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

EXACT = {"megatron_core"}  # distributions whose installed version must equal the carried one


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return _norm(name), version


def top_level_modules(path: Path) -> list[str]:
    """Importable top-level names of a wheel (``top_level.txt`` when present, else its RECORD's first parts)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        top = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        if top:
            mods = z.read(top[0]).decode().split()
        else:
            mods = sorted({n.split("/")[0] for n in names if "/" in n and ".dist-info" not in n.split("/")[0]
                           and ".data" not in n.split("/")[0]})
            mods += [n[:-3] for n in names if "/" not in n and n.endswith(".py")]
    return [m for m in mods if m.isidentifier() and not m.startswith("_")] or mods[:1]


def installed_version(dist: str) -> str | None:
    for candidate in (dist, dist.replace("_", "-")):
        try:
            return md.version(candidate)
        except md.PackageNotFoundError:
            continue
    return None


def why_install(path: Path) -> str | None:
    """None when this python already has the wheel's distribution in a usable state, else the reason."""
    dist, version = wheel_name_version(path)
    have = installed_version(dist)
    if have is None:
        return "missing"
    if dist in EXACT and have != version:
        return f"version {have} installed, {version} needed"
    for module in top_level_modules(path):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure means the carried wheel is needed
            return f"import {module} failed: {type(e).__name__}: {e}"[:200]
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", required=True, help="folder of carried wheels (fetch_wheels.sh)")
    ap.add_argument("--target", required=True, help="install folder (put on PYTHONPATH afterwards)")
    ap.add_argument("--report", help="write what was found and installed here (JSON)")
    args = ap.parse_args(argv)
    t0 = time.time()
    wheels = sorted(Path(args.wheels).glob("*.whl"))
    report = {"wheels": len(wheels), "present": {}, "installed": {}, "error": None}
    if not wheels:
        report["error"] = f"no wheels in {args.wheels} (run benchmarks/gpu/fetch_wheels.sh and carry .whl)"
    chosen = []
    for w in wheels:
        dist, version = wheel_name_version(w)
        reason = why_install(w)
        if reason is None:
            report["present"][dist] = installed_version(dist)
        else:
            report["installed"][dist] = {"version": version, "reason": reason}
            chosen.append(str(w))
    if chosen:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", args.target, *chosen]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            report["error"] = f"pip install failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}"
    report["seconds"] = round(time.time() - t0, 1)
    for dist, info in report["installed"].items():
        print(f"install: {dist} {info['version']} ({info['reason']})")
    print(f"install: {len(chosen)} of {len(wheels)} carried wheels installed into {args.target} in "
          f"{report['seconds']} s; present: {', '.join(f'{k} {v}' for k, v in sorted(report['present'].items()))}")
    if report["error"]:
        print(f"install: error: {report['error']}", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
