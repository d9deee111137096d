"""Structured pruning on the networks users bring: the pattern networks of `tests/patterns.py` at 224.

For each pattern (torchvision's ResNet / MobileNetV3 / ShuffleNetV2 / RegNetY, timm's GhostNet, a hierarchical
ViT, Swin, MobileViT, EfficientViT, LeViT, StarNet, MobileNetV4-style multi-query attention): params and MACs
before and after structured magnitude, structured DIMAP and OTO at 50 %; whether each pruned network compiles
and verifies on ONNX, TFLite and ExecuTorch; and ExecuTorch/XNNPACK latency before and after (magnitude),
timed interleaved in this process. Random weights (nothing is downloaded): latency and MACs do not depend on
the values. OTO trains 30 steps on digits at 64x64 (enough to zero its groups, not to learn; at 224 a CPU
step of the ViTs takes tens of seconds) and its checkpoint is compiled at 224: a plan names channels, not
sizes. LeViT is built for one resolution, so it is pruned at the bench's size by every method.

Goals (issue 15): every cell passes; structured 50 % removes >= 40 % of the MACs of every network; the measured
speed-up >= 0.8 x the MAC reduction.

    python bench/architectures.py | tee bench/architectures.txt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402
from edgekit.compile.executorch import ExecuTorchRunner  # noqa: E402
from edgekit.models import count_macs, load_model, trusted_code  # noqa: E402
from edgekit.profile import cpu_flags, host_name  # noqa: E402
from edgekit.profile.timing import interleaved  # noqa: E402
from tests.patterns import PATTERNS  # noqa: E402

METHODS = {  # label: prune keyword arguments
    "magnitude": {"method": "magnitude", "structured": True},
    "dimap": {"method": "dimap", "structured": True},
    "oto": {"method": "oto", "steps": 30},
}
TARGETS = ("onnx", "tflite", "executorch")
# besides the pattern networks (narrow: a 224 forward of most is under 3 ms, where per-op overheads, not MACs,
# set the time), a network of full width, whose time is its MACs: `tests/patterns.py`'s factory of that name
FULL_WIDTH = ("resnet18",)


def cpu_line() -> str:
    """The CPU (`edgekit.profile.host_name`) and the flags that change the ratios (VNNI: int8; AVX-512)."""
    return f"# CPU: {host_name()}; flags: {' '.join(cpu_flags()) or 'none of avx2/avx512/amx'}"


def reference(name: str, size: int, work: Path) -> str:
    """A model reference for the pattern at `size` (LeViT's attention biases are built for one resolution)."""
    cls = PATTERNS[name].__name__ if name in PATTERNS else name
    if name != "levit":
        return f"{ROOT / 'tests' / 'patterns.py'}:{cls}"
    path = work / f"levit_{size}.py"
    path.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.patterns import LeViTLike\n\n\n"
        f"def levit():\n    return LeViTLike(resolution={size})\n"
    )
    return f"{path}:levit"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--oto-size", type=int, default=64, help="input size OTO trains at")
    ap.add_argument("--only", default="", help="comma-separated pattern names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgekit-arch-bench-"))
    names = args.only.split(",") if args.only else [*sorted(PATTERNS), *FULL_WIDTH]
    print(cpu_line())
    setting = f"{args.size}x{args.size}, batch 1, fp32, {args.threads} threads, ratio {args.ratio:.0%}"
    print(f"# {setting}, torch {torch.__version__}")
    print(
        f"{'network':14s} {'method':10s} {'params M':>12s} {'GMACs':>13s} {'MACs -':>7s} "
        f"{'onnx':>5s} {'tflite':>6s} {'et':>5s} {'ET ms':>13s} {'speed-up':>8s} {'vs MACs':>7s}"
    )
    x = torch.randn(1, 3, args.size, args.size).numpy()
    summary = []
    for name in names:
        ref = reference(name, args.size, work)
        with trusted_code():
            base = load_model(ref, input_size=args.size).model
        params0, macs0 = sum(p.numel() for p in base.parameters()) / 1e6, count_macs(base, args.size)
        base_et = edgekit.compile(ref, "executorch", out=work / name / "base", input_size=args.size).artifact
        for label, kw in METHODS.items():
            t0 = time.perf_counter()
            ckpt = work / name / f"{label}.pt"
            try:
                at = args.oto_size if label == "oto" and name != "levit" else args.size
                with trusted_code():
                    edgekit.prune(ref, ratio=args.ratio, out=ckpt, input_size=at, num_classes=10, **kw)
                    pruned = load_model(str(ckpt)).model
            except edgekit.EdgekitError as e:
                print(f"{name:14s} {label:10s} prune failed: {e}", flush=True)
                summary.append((name, label, None, False, None))
                continue
            params, macs = sum(p.numel() for p in pruned.parameters()) / 1e6, count_macs(pruned, args.size)
            cells, artifacts = [], {}
            for target in TARGETS:
                try:
                    with trusted_code():
                        r = edgekit.compile(str(ckpt), target, out=work / name / label, input_size=args.size)
                    ok = r.manifest["verification"]["status"] == "passed"
                    artifacts[target] = r.artifact
                except edgekit.EdgekitError as e:
                    ok = False
                    print(f"#   {name} {label} {target}: {e}", flush=True)
                cells.append("pass" if ok else "FAIL")
            timing = ""
            speed = None
            if label == "magnitude" and "executorch" in artifacts:
                a = ExecuTorchRunner(base_et, args.threads).run
                b = ExecuTorchRunner(artifacts["executorch"], args.threads).run
                res = interleaved({"orig": partial(a, x), "pruned": partial(b, x)}, rounds=args.rounds, per_round=5)
                t_orig, t_pruned = res["orig"]["median_ms"], res["pruned"]["median_ms"]
                speed = t_orig / t_pruned
                timing = f"{t_orig:6.2f}>{t_pruned:6.2f} {speed:7.2f}x {speed / (macs0 / macs):7.2f}"
            cut = 1 - macs / macs0
            print(
                f"{name:14s} {label:10s} {params0:5.2f}>{params:5.2f} {macs0 / 1e9:6.3f}>{macs / 1e9:6.3f} "
                f"{cut:6.1%} {cells[0]:>5s} {cells[1]:>6s} {cells[2]:>5s} {timing}  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            summary.append((name, label, cut, all(c == "pass" for c in cells), speed and speed * (1 - cut)))
    cuts = [c for _, label, c, *_ in summary if label == "magnitude" and c is not None]
    fits = [(n, f) for n, label, _, _, f in summary if label == "magnitude" and f is not None]
    fast = [n for n, f in fits if f >= 0.8]
    print(
        f"# cells passing: {sum(ok for *_, ok, _ in summary)}/{len(summary)}; magnitude 50 %: "
        f"{sum(c >= 0.40 for c in cuts)}/{len(cuts)} networks lose >= 40 % of their MACs; speed-up >= 0.8x the MAC "
        f"reduction: {len(fast)}/{len(fits)} ({', '.join(fast) or 'none'})"
    )


if __name__ == "__main__":
    main()
