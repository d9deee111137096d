"""MobileViG-Ti at 224: PyTorch eager vs ExecuTorch/XNNPACK vs LiteRT vs ONNX Runtime, threads pinned.

Every runtime is pinned to the same thread count (1, then 2) and timed in interleaved rounds in one
process, so the ratios printed are measured side by side. `executorch (plain export)` is the same
network exported without edgekit's export form, to show what edgekit's own changes buy.
Then a per-op breakdown of the ExecuTorch program (ETDump) says where its time goes.

    python bench/runtimes.py            # writes nothing but stdout; `make bench` keeps bench/runtimes.txt
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import edgekit
from edgekit.compile import ExportWrapper, example_input, get_target
from edgekit.compile.base import CompileOptions
from edgekit.compile.executorch import ExecuTorchRunner, executorch_op_profile
from edgekit.compile.onnx import OnnxRunner
from edgekit.compile.tflite import TFLiteRunner
from edgekit.profile.timing import interleaved


class ConvStack(torch.nn.Module):
    """Eight convolutions of one kind: isolates the runtime's kernel from everything else in a network."""

    def __init__(self, c: int, kind: str):
        super().__init__()
        if kind == "3x3":
            convs = [torch.nn.Conv2d(c, c, 3, padding=1) for _ in range(8)]
        else:
            convs = [torch.nn.Conv2d(c, 4 * c, 1) if i % 2 == 0 else torch.nn.Conv2d(4 * c, c, 1) for i in range(8)]
        self.convs = torch.nn.Sequential(*convs)

    def forward(self, x):
        return self.convs(x).mean((2, 3))


def kernel_check(work: Path, threads: int) -> None:
    """The same convolutions through ExecuTorch's XNNPACK and LiteRT's XNNPACK: no edgekit graph in between."""
    print(f"\n## kernels alone ({threads} thread{'s' if threads > 1 else ''}): 8 convs of 42 channels at 56x56")
    print(f"{'convolutions':14s} {'executorch ms':>14s} {'litert ms':>10s} {'ratio':>6s}")
    for kind in ("1x1", "3x3"):
        net = ConvStack(42, kind).eval()
        x = torch.randn(1, 42, 56, 56)
        opts = CompileOptions(input_size=56, in_chans=42)
        pte, tfl = work / f"k{kind}.pte", work / f"k{kind}.tflite"
        get_target("executorch").export(net, x, pte, opts)
        get_target("tflite").export(net, x, tfl, opts)
        xn = x.numpy()
        et, lite = ExecuTorchRunner(pte, threads).run, TFLiteRunner(tfl, threads).run
        res = interleaved({"et": partial(et, xn), "lite": partial(lite, xn)}, rounds=8, per_round=5)
        a, b = res["et"]["median_ms"], res["lite"]["median_ms"]
        print(f"{kind:14s} {a:14.2f} {b:10.2f} {a / b:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilevig_ti")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = edgekit.create_model(args.model)  # random weights: latency does not depend on their values
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    print(
        f"# {args.model} at {args.size}x{args.size}, batch 1, fp32; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads available; torch {torch.__version__}"
    )
    print("\n## compile (wall time, verification against PyTorch)")
    artifacts = {}
    for target in ("executorch", "tflite", "onnx"):
        t0 = time.perf_counter()
        r = edgekit.compile(model, target, input_size=args.size, out=work, name=args.model)
        v = r.verification
        print(
            f"{target:11s} {time.perf_counter() - t0:6.1f} s  {r.manifest['bytes'] / 1e6:6.2f} MB  "
            f"verify {v['status']}: max abs err {v['max_abs_err']:.2e}, cosine {v['cosine_min']:.6f}"
        )
        artifacts[target] = r.artifact
    # The same network, exported as torch.export sees it, without edgekit's export form.
    plain = work / "plain.pte"
    opts = CompileOptions(input_size=args.size)
    get_target("executorch").export(ExportWrapper(model).eval(), example_input(opts), plain, opts)
    artifacts["executorch_plain"] = plain

    x = example_input(opts).numpy()
    xt = torch.from_numpy(x)
    results = {}
    for n in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(n)
        runners = {
            "pytorch eager": lambda: model(xt),
            "executorch (plain export)": ExecuTorchRunner(artifacts["executorch_plain"], n).run,
            "executorch (edgekit)": ExecuTorchRunner(artifacts["executorch"], n).run,
            "litert": TFLiteRunner(artifacts["tflite"], n).run,
            "onnxruntime": OnnxRunner(artifacts["onnx"], n).run,
        }
        fns = {k: (lambda f=f: f(x)) if k != "pytorch eager" else f for k, f in runners.items()}
        with torch.no_grad():
            results[n] = interleaved(fns, rounds=args.rounds, per_round=args.per_round)
        del runners, fns

    for n, res in results.items():
        lite = res["litert"]["median_ms"]
        print(f"\n## {n} thread{'s' if n > 1 else ''}: median of {res['litert']['runs']} runs each, interleaved")
        print(f"{'runtime':28s} {'median ms':>10s} {'p90 ms':>8s} {'IQR ms':>8s} {'x LiteRT':>9s}")
        for name, s in res.items():
            print(
                f"{name:28s} {s['median_ms']:10.2f} {s['p90_ms']:8.2f} {s['iqr_ms']:8.2f} {s['median_ms'] / lite:9.2f}"
            )
    if set(results) >= {1, 2}:
        print("\n## thread scaling (1 thread / 2 threads)")
        for name in results[1]:
            print(f"{name:28s} {results[1][name]['median_ms'] / results[2][name]['median_ms']:5.2f}x")

    n = max(results)
    kernel_check(work, n)
    print(
        f"\n## where ExecuTorch's time goes ({n} thread{'s' if n > 1 else ''}; ETDump, median per op, summed by kind)"
    )
    for label, pte in (("edgekit", artifacts["executorch"]), ("plain export", artifacts["executorch_plain"])):
        rows = executorch_op_profile(pte, x, threads=n)
        total = sum(r["ms"] for r in rows)
        print(f"-- {label}: {total:.2f} ms in {sum(r['count'] for r in rows)} ops")
        for r in rows[:8]:
            print(f"   {r['op']:40s} x{r['count']:<3d} {r['ms']:8.3f} ms {r['share']:6.1%}")


if __name__ == "__main__":
    sys.exit(main())
