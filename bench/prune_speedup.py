"""Structured pruning: MAC reduction vs measured speed-up, ExecuTorch/XNNPACK and LiteRT at equal threads.

MobileViG-Ti and GreedyViG-S at 224, channels removed by global structured magnitude pruning at 30,
50 and 70 % (latency does not depend on which channels go, only on how many, so no training is
needed here). Each pruned network is compiled and verified, then timed against its unpruned original
in interleaved rounds in one process. The goal: measured speed-up >= 0.8 x the MAC reduction.

    python bench/prune_speedup.py > bench/prune_speedup.txt
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import torch

import edgekit
from edgekit.compile.executorch import ExecuTorchRunner
from edgekit.compile.tflite import TFLiteRunner
from edgekit.models import count_macs, load_model
from edgekit.profile.timing import interleaved
from edgekit.prune import prune

RUNNERS = {"executorch": ExecuTorchRunner, "tflite": TFLiteRunner}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilevig_ti,greedyvig_s")
    ap.add_argument("--ratios", default="0.3,0.5,0.7")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-prune-bench-"))
    torch.set_num_threads(args.threads)
    print(f"# structured magnitude pruning at {args.size}x{args.size}, {args.threads} threads, batch 1, fp32")
    print(
        f"{'model':14s} {'ratio':>5s} {'params M':>8s} {'GMACs':>7s} {'MAC red.':>8s} "
        f"{'target':>10s} {'ms orig':>8s} {'ms pruned':>9s} {'speed-up':>8s} {'vs MACs':>7s}"
    )
    x = torch.randn(1, 3, args.size, args.size).numpy()
    for name in args.models.split(","):
        base = {t: edgekit.compile(name, t, out=work / "base", input_size=args.size) for t in RUNNERS}
        macs0 = count_macs(load_model(name).model, args.size)
        for ratio in [float(r) for r in args.ratios.split(",")]:
            ckpt = work / f"{name}_{int(ratio * 100)}.pt"
            prune(name, "magnitude", ratio, structured=True, out=ckpt, input_size=args.size)
            pruned = load_model(str(ckpt)).model
            macs = count_macs(pruned, args.size)
            params = sum(p.numel() for p in pruned.parameters()) / 1e6
            mac_red = macs0 / macs
            for target, runner in RUNNERS.items():
                art = edgekit.compile(str(ckpt), target, out=work / "pruned").artifact
                a, b = runner(base[target].artifact, args.threads).run, runner(art, args.threads).run
                res = interleaved({"orig": partial(a, x), "pruned": partial(b, x)}, rounds=args.rounds, per_round=5)
                t0, t1 = res["orig"]["median_ms"], res["pruned"]["median_ms"]
                speed = t0 / t1
                print(
                    f"{name:14s} {ratio:5.0%} {params:8.2f} {macs / 1e9:7.3f} {mac_red:7.2f}x "
                    f"{target:>10s} {t0:8.2f} {t1:9.2f} {speed:7.2f}x {speed / mac_red:7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
