"""Latency predictor quality: zoo models x widths x structured pruning ratios, measured on this host.

Every variant is compiled for ExecuTorch (XNNPACK) and LiteRT, profiled with `edgekit.profile` (the
same path as `edgekit profile`) and stored in a latency database. The predictor (cost per op kind from
MACs and bytes moved, `edgekit/latency/predictor.py`) is then judged on variants it was not fitted on:

- leave-one-out: each variant predicted by a fit on all the others;
- leave-one-family-out: every variant of a family (MobileNetV2, MobileOne, MobileViG, GreedyViG)
  predicted by a fit on the other families only (a harder test: a family never seen).

Goals (issue 5): Spearman >= 0.9 and median absolute percentage error <= 10 %, on both runtimes.

    python bench/predictor.py > bench/predictor.txt        # measures (about 20 minutes on 2 cores)
    python bench/predictor.py --measurements bench/predictor_measurements.json   # refit only
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edgekit
from edgekit.latency.db import LatencyDB
from edgekit.latency.features import cost_features
from edgekit.latency.predictor import fit, leave_one_out, quality
from edgekit.models import load_model
from edgekit.profile import host_name, profile
from edgekit.prune import prune

BASE = [
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobileone_s0",
    "mobileone_s1",
    "mobileone_s2",
    "mobilevig_ti",
    "mobilevig_s",
    "greedyvig_s",
]
PRUNED = {
    "mobilenetv2_100": (0.3, 0.5),
    "mobilenetv2_140": (0.3,),
    "mobileone_s0": (0.3, 0.5),
    "mobileone_s1": (0.3, 0.5, 0.7),
    "mobileone_s2": (0.5,),
    "mobilevig_ti": (0.3, 0.5, 0.7),
    "mobilevig_s": (0.3, 0.5),
    "greedyvig_s": (0.3, 0.5),
}
TARGETS = ("executorch", "tflite")


def family(name: str) -> str:
    return name.split("_")[0]


def measure(args) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="edgekit-predictor-bench-"))
    db = LatencyDB(work / "latency.sqlite")
    variants = [(m, 0.0) for m in BASE] + [(m, r) for m, rs in PRUNED.items() for r in rs]
    out = []
    for name, ratio in variants:
        t0 = time.perf_counter()
        ref = name
        if ratio:
            ref = str(work / f"{name}_p{int(ratio * 100)}.pt")
            prune(name, "magnitude", ratio, structured=True, out=ref, input_size=args.size)
        feats = cost_features(load_model(ref, input_size=args.size).model, args.size)
        row = {"model": name, "ratio": ratio, "features": feats}
        for target in TARGETS:
            art = edgekit.compile(
                ref, target, out=work / target, input_size=args.size, name=f"{name}_p{int(ratio * 100)}", verify=False
            ).artifact
            rep = profile(art, runs=args.runs, warmup=args.warmup, threads=args.threads)
            db.add(rep, feats)
            row[target] = rep["median_ms"]
            row[f"{target}_iqr"] = rep["iqr_ms"]
        out.append(row)
        print(
            f"# measured {name} pruned {ratio:.0%}: "
            + ", ".join(f"{t} {row[t]:.2f} ms" for t in TARGETS)
            + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    db.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--measurements", help="refit on a saved measurements file instead of measuring")
    ap.add_argument("--save", default="bench/predictor_measurements.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.measurements:
        rows = json.loads(Path(args.measurements).read_text())["variants"]
        print(f"# refit on {args.measurements}")
    else:
        print(
            f"# {len(BASE)} zoo models + structured magnitude pruning; {args.size}x{args.size}, batch 1, fp32, "
            f"{args.threads} threads; {host_name()}; torch {torch.__version__}; median of {args.runs} runs each"
        )
        rows = measure(args)
        Path(args.save).write_text(
            json.dumps(
                {
                    "host": host_name(),
                    "platform": platform.platform(),
                    "size": args.size,
                    "threads": args.threads,
                    "variants": rows,
                },
                indent=1,
            )
            + "\n"
        )
    names = [f"{r['model']}" + (f" -{r['ratio']:.0%}" if r["ratio"] else "") for r in rows]
    fams = [family(r["model"]) for r in rows]
    print(f"\n## {len(rows)} variants: measured vs predicted (leave-one-out / leave-one-family-out), ms")
    header = f"{'variant':22s} {'GMACs':>6s}"
    for t in TARGETS:
        header += f" | {t[:5]:>5s} ms {'loo':>6s} {'err':>5s} {'lofo':>6s} {'err':>5s}"
    print(header)
    results = {}
    for t in TARGETS:
        points = [(r["features"], r[t]) for r in rows]
        loo = leave_one_out(points)
        lofo = np.empty(len(rows))
        for fam in sorted(set(fams)):
            idx = [i for i, f in enumerate(fams) if f == fam]
            rest = [p for i, p in enumerate(points) if fams[i] != fam]
            pred = fit(rest, t, "host", args.threads, with_loo=False)
            for i in idx:
                lofo[i] = pred.predict(points[i][0])
        results[t] = (np.array([p[1] for p in points]), loo, lofo, fit(points, t, "host", args.threads, with_loo=False))
    for i, r in enumerate(rows):
        f = r["features"]
        macs = sum(v for k, v in f.items() if k.endswith("gmacs"))
        line = f"{names[i]:22s} {macs:6.3f}"
        for t in TARGETS:
            y, loo, lofo, _ = results[t]
            line += (
                f" | {y[i]:8.2f} {loo[i]:6.2f} {(loo[i] - y[i]) / y[i]:+5.0%} {lofo[i]:6.2f}"
                f" {(lofo[i] - y[i]) / y[i]:+5.0%}"
            )
        print(line)
    print("\n## quality (goals: Spearman >= 0.9, MdAPE <= 10 %)")
    print(f"{'runtime':11s} {'evaluation':22s} {'Spearman':>8s} {'MdAPE':>6s} {'max APE':>7s}  goal")
    for t in TARGETS:
        y, loo, lofo, _ = results[t]
        for label, p in (("leave-one-out", loo), ("leave-one-family-out", lofo)):
            q = quality(y, p)
            ok = "met" if q["spearman"] >= 0.9 and q["mdape"] <= 0.10 else "MISSED"
            print(f"{t:11s} {label:22s} {q['spearman']:8.3f} {q['mdape']:6.1%} {q['max_ape']:7.1%}  {ok}")
    print("\n## fitted costs on all variants (ms per unit; units: GMACs, M elements, MB, op)")
    for t in TARGETS:
        p = results[t][3]
        costs = ", ".join(f"{k} {v:.3g}" for k, v in p.costs.items() if v > 1e-9)
        print(f"{t:11s} intercept {p.intercept:.3g} ms; {costs}")


if __name__ == "__main__":
    main()
