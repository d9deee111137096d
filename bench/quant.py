"""Float vs quantized, per target that runs here: accuracy, top-1 agreement, size, latency at equal threads.

`mobilevig_ti` and `mobileone_s0` (seeded init, nothing downloaded) are trained briefly on Fashion-MNIST at
a small input size. Each is compiled float and quantized for ExecuTorch (XNNPACK), TFLite (LiteRT) and ONNX
Runtime. Accuracy and agreement with the float model are measured by running the artifacts on the test
split at the training size. Latency is measured on the same weights compiled at 224x224 (the networks are
fully convolutional), calibrated on the same data resized, float and int8 timed in interleaved rounds in
one process at the same thread count. Core ML runs on macOS only and is left out here.

Goals (issue 4): agreement >= 98 %, accuracy drop <= 0.5 point, size <= 0.3x, ExecuTorch and LiteRT int8
latency <= 0.6x float.

    python bench/quant.py | tee bench/quant.txt
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import edgekit
from edgekit.compile.executorch import ExecuTorchRunner
from edgekit.compile.onnx import OnnxRunner
from edgekit.compile.tflite import TFLiteRunner
from edgekit.errors import EdgekitError
from edgekit.profile.timing import interleaved

RUNNERS = {"executorch": ExecuTorchRunner, "tflite": TFLiteRunner, "onnx": OnnxRunner}
SCHEMES = {"executorch": ["int8", "int8-dynamic"], "tflite": ["int8", "int8-dynamic"], "onnx": ["int8"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilevig_ti,mobileone_s0")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--size", type=int, default=32, help="training and accuracy input size")
    ap.add_argument("--latency-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--val", type=int, default=10000, help="test images for accuracy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgekit-quant-bench-"))
    print(
        f"# {args.data}: trained {args.epochs} epochs of {args.limit} images at {args.size}x{args.size}; accuracy on "
        f"{args.val} test images at {args.size}; latency at {args.latency_size}, {args.threads} threads, batch 1"
    )
    print(
        f"{'model':13s} {'target':10s} {'scheme':12s} {'acc float':>9s} {'acc q':>7s} {'drop':>6s} {'agree':>7s} "
        f"{'size':>6s} {'ms float':>8s} {'ms q':>7s} {'latency':>7s}"
    )
    for name in args.models.split(","):
        t0 = time.perf_counter()
        ckpt = work / f"{name}.pt"
        edgekit.train(name, args.data, out=ckpt, epochs=args.epochs, input_size=args.size, limit=args.limit, lr=2e-3)
        print(f"# {name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        for target, schemes in SCHEMES.items():
            flt_big = edgekit.compile(str(ckpt), target, out=work / "fb", input_size=args.latency_size)
            for scheme in schemes:
                try:
                    q = edgekit.compile(
                        str(ckpt),
                        target,
                        quantize=scheme,
                        calib=args.data,
                        val_samples=args.val,
                        out=work / "q",
                        name=f"{name}_{scheme}",
                    )
                    q_big = edgekit.compile(
                        str(ckpt),
                        target,
                        quantize=scheme,
                        calib=args.data,
                        val_samples=32,
                        out=work / "qb",
                        name=f"{name}_{scheme}",
                        input_size=args.latency_size,
                    )
                except EdgekitError as e:
                    print(f"{name:13s} {target:10s} {scheme:12s} failed: {e}", flush=True)
                    continue
                a = q.manifest["quantization"]["accuracy"]
                size = q_big.manifest["bytes"] / flt_big.manifest["bytes"]
                x = torch.randn(1, 3, args.latency_size, args.latency_size).numpy()
                runner = RUNNERS[target]
                f_run, q_run = runner(flt_big.artifact, args.threads).run, runner(q_big.artifact, args.threads).run
                res = interleaved({"f": partial(f_run, x), "q": partial(q_run, x)}, rounds=args.rounds, per_round=5)
                tf, tq = res["f"]["median_ms"], res["q"]["median_ms"]
                print(
                    f"{name:13s} {target:10s} {scheme:12s} {a['float']:9.2%} {a['quantized']:7.2%} "
                    f"{a['drop_points']:+6.2f} {a['agreement']:7.2%} {size:5.2f}x {tf:8.2f} {tq:7.2f} {tq / tf:6.2f}x",
                    flush=True,
                )
    print("# size and latency: quantized / float; drop in accuracy points (negative: better than float)")


if __name__ == "__main__":
    main()
