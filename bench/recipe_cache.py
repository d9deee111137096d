"""`edgekit run recipes/quickstart.yaml` three times in one folder: cold, again (every step cached), and with
one parameter changed (only the steps that depend on it run). Wall times of the whole command, side by side.

    python bench/recipe_cache.py            # about 5 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"


def run(out: Path, env: dict, *sets: str) -> tuple[float, dict]:
    args = [sys.executable, "-m", "edgekit.cli", "run", str(RECIPE), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"edgekit run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall, json.loads((out / "run.json").read_text())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, EDGEKIT_DB=str(Path(tmp) / "latency.sqlite"))
        out = Path(tmp) / "quickstart"
        runs = [
            ("cold", *run(out, env)),
            ("again", *run(out, env)),
            ("distill.epochs=3", *run(out, env, "distill.epochs=3")),
        ]
        names = [s["name"] for s in runs[0][2]["steps"]]
        print(f"edgekit run {RECIPE.relative_to(ROOT)} (cpus: {os.cpu_count()})\n")
        print(f"{'step':<20}" + "".join(f"{label:>22}" for label, _, _ in runs))
        for i, name in enumerate(names):
            cells = []
            for _, _, m in runs:
                s = m["steps"][i]
                cells.append(
                    f"{s['status']} {s.get('seconds', 0.0):.1f} s" if s["status"] in ("ran", "cached") else s["status"]
                )
            print(f"{name:<20}" + "".join(f"{c:>22}" for c in cells))
        print(f"{'wall (whole command)':<20}" + "".join(f"{w:>20.1f} s" for _, w, _ in runs))
        cold, again, changed = (w for _, w, _ in runs)
        print(
            f"\nsecond run: {cold / again:.1f}x faster than the first (every step cached: "
            f"{all(s['status'] in ('cached', 'skipped') for s in runs[1][2]['steps'])})"
        )
        ran = [s["name"] for s in runs[2][2]["steps"] if s["status"] == "ran"]
        print(f"distill.epochs=3: {cold / changed:.1f}x faster than the first; ran only {', '.join(ran)}")
        print(
            f"run folder: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB "
            f"(cache entries: {len(list((out / 'cache').iterdir()))})"
        )


if __name__ == "__main__":
    main()
