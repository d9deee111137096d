"""The kernel sweep: kernels measured alone over a grid of shapes, the training set of the kernel-level model.

Each grid point (`Spec`) is one kernel of a kind (conv kxk, dwconv, pwconv, linear, matmul, elementwise,
activation, reduce, layout) at a shape: channels on and off multiples of 8 and 16 (the GEMM tiles), a few spatial
sizes, strides and kernel sizes. A spec is a small network: a *prefix* (`p{i}`: an average pooling to the spatial
size and a 1x1 convolution from the image's 3 channels to the kernel's input channels, tokens for the GEMM kinds)
and the kernel (`k{i}`); its output is reduced to one number per kernel.

How a kernel is timed depends on what the target's host runtime tells:

- **per-op rows with module paths** (ExecuTorch, through its ETRecord; LiteRT, through its own profiler and the
  tensors' names): each program (one spec: see `PER_PROGRAM`) is profiled with `per_op`; the kernel's time is its
  rows' (`kernels_from_rows`), so the prefix and the final reduction cost nothing in the sample. The program's
  kernels are split as the runtime runs them (`kernels_of(..., target=)`): on ExecuTorch, the operand copies of a
  batched matmul (portable `expand_copy`) are samples of their own, as they are kernels of their own in a network
  (lumped into the matmul's sample, they had made a GEMM of Swin's windowed attention cost 1.2 us where Swin's took
  0.26), and the NCHW <-> NHWC copies XNNPACK's partition inserts are not the matmul's nor anyone's (`_sampled`).
  The lowering costs a second partitioning per program: ExecuTorch's default sweep took 541 s against 343;
- **totals only** (ONNX Runtime; LiteRT of an ai-edge-litert whose profiler edgekit does not read): one program per
  spec and one per distinct prefix (the prefix alone, its output reduced the same way); the kernel's time is the
  difference of the two medians (dropped where the difference is not positive: the kernel is under the timer's
  noise). A spec of several kernels (a comparison and its dtype conversion) gives the whole difference to its main
  kernel.

Samples go to the database's `kernel_samples` table with source `sweep`. `QUICK` is a handful of kernels at tiny
sizes (tests); `DEFAULT` 260 programs (2.2-3.1 s each to compile, lower and time here: 10 to 13 minutes a runtime).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..compile import compile as compile_model
from ..compile import litert_profile
from ..errors import EdgekitError
from ..io import write_json
from ..profile import load_report, profile
from .db import LatencyDB, precision_of
from .kernels import Kernel, kernels_from_rows, kernels_of

__all__ = [
    "Spec",
    "QUICK",
    "DEFAULT",
    "GRIDS",
    "PER_OP_TARGETS",
    "rows_name_modules",
    "SweepResult",
    "build",
    "grid",
    "sweep",
    "write_bundle",
    "missing",
    "import_bundle_report",
    "import_bundle_reports",
]

PER_OP_TARGETS = ("executorch", "tflite")  # host per-op rows carry module paths: kernels timed inside a program
# One spec per program: ExecuTorch places XNNPACK's per-op rows on modules by aligning them, in the order they ran,
# to the graph's nodes, which holds for a chain; independent branches side by side run in another order than the
# graph's and their rows land on each other's modules (seen with 8 specs in one program).
PER_PROGRAM = 1
WINDOW = 16  # tokens per window of the windowed matmul specs
HEAD_DIM = 16  # channels per head of the multi-head matmul specs
SPATIAL_ROOT = 56  # programs take 56x56 images (32x32 for the quick grid); every spatial size divides it
QUICK_ROOT = 32


@dataclass(frozen=True)
class Spec:
    """One grid point: a kernel kind at a shape. `h` is the input's spatial size (tokens = h*h for linear and
    matmul; h = 1: a classifier head's vector); `variant` picks an op where a kind has several: elementwise, one of
    `BINARY` (`add`, `sub`, ...: two full-size operands; `x * x` runs as XNNPACK's Square, whose row ExecuTorch
    places on the prefix's module; `lt_to` and `where` are two kernels each), one of `UNARY`, or `bcast` (a
    per-channel multiply); activation `hardswish` / `gelu` / `sigmoid` / `silu` / `softmax` (`cin` rows of h*h
    tokens); reduce `mean` / `maxpool` / `sum` / `std` (over channels); layout `cat` / `permute` / `shuffle` (a
    channel shuffle) / `chunk` (halves swapped); matmul `windows` (the tokens as windows of `WINDOW`, one GEMM
    each) or `heads` (4-D: heads of `HEAD_DIM` channels)."""

    kind: str
    cin: int
    cout: int
    h: int
    k: int = 1
    stride: int = 1
    variant: str = ""

    @property
    def name(self) -> str:
        v = f"_{self.variant}" if self.variant else ""
        ks = f"_k{self.k}s{self.stride}" if self.kind in ("conv", "dwconv") else ""
        return f"{self.kind}{v}{ks}_{self.cin}x{self.cout}_h{self.h}"


class _Prefix(nn.Module):
    """The image (1, 3, S, S) to the kernel's input: (1, cin, h, h), tokens (1, h*h, cin), or a vector (1, cin)."""

    def __init__(self, root: int, cin: int, h: int, shape: str) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(root // h) if h < root else nn.Identity()
        self.proj = nn.Conv2d(3, cin, 1)
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(self.pool(x))
        if self.shape == "tokens":
            return y.flatten(2).transpose(1, 2)
        if self.shape == "vector":
            return y.flatten(1)
        return y


# Ops on the full-size input and a second operand of the same shape, and on the input alone. Besides XNNPACK's binary
# and unary kernels they cover what ExecuTorch leaves to its portable kernels: comparisons, the dtype conversion of a
# mask, `where` and `masked_fill` (GreedyViG's graph conv, Swin's attention mask), which run at several times
# XNNPACK's cost per element (a bool->float conversion of 3136 elements: 30 us here). Without them a network holding
# them was predicted at the kind's base rate: GreedyViG's 96 conversions at 0.01 ms instead of 1.0.
BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "maximum": torch.maximum,
    "lt_to": lambda x, o: (x < o).to(x.dtype),
    "where": lambda x, o: torch.where(x > o, x, o),
}
UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs,
    "masked_fill": lambda x: x.masked_fill(x != 0, -100.0),
    "hardswish": nn.functional.hardswish,
    "gelu": nn.functional.gelu,
    "sigmoid": torch.sigmoid,
    "silu": nn.functional.silu,
}


class _Op(nn.Module):
    """A kernel that is an op on its input (elementwise, activation, reduce, layout, matmul)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.variant = spec.variant
        if spec.variant == "bcast":
            self.scale = nn.Parameter(torch.randn(1, spec.cin, 1, 1))
        if spec.variant in BINARY:  # a full-size second operand, as a residual add reads (positive: a divisor)
            self.other = nn.Parameter(torch.rand(1, spec.cin, spec.h, spec.h) + 0.5)
        if spec.variant == "maxpool":
            self.pool = nn.MaxPool2d(3, 2, 1)
        self.kind = spec.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.variant
        if self.kind == "matmul" and v == "windows":  # windowed attention: many small GEMMs (Swin)
            w = x.reshape(-1, WINDOW, x.shape[-1])
            return w @ w.transpose(1, 2)
        if self.kind == "matmul" and v == "heads":  # multi-head attention's scores: 4-D, heads of HEAD_DIM channels
            q = x.reshape(x.shape[0], x.shape[1], -1, HEAD_DIM).transpose(1, 2)
            return q @ q.transpose(-2, -1)
        if self.kind == "matmul":
            return x @ x.transpose(1, 2)
        if v == "shuffle":  # ShuffleNet's channel shuffle over two groups
            return x.unflatten(1, (2, -1)).transpose(1, 2).reshape(x.shape)
        if v == "chunk":  # two halves of the channels, swapped
            a, b = x.chunk(2, 1)
            return torch.cat([b, a], 1)
        if v == "softmax":  # attention scores: `cin` rows of h*h tokens each
            return x.flatten(2).softmax(-1)
        if v == "std":  # over channels (GreedyViG's graph conv; ExecuTorch: a portable kernel)
            return x.std(1, keepdim=True)
        if v in BINARY:
            return BINARY[v](x, self.other)
        if v in UNARY:
            return UNARY[v](x)
        if v == "bcast":
            return x * self.scale
        if v == "mean":
            return x.mean((2, 3))
        if v == "sum":  # over channels, as a graph or gating block sums its channels (ExecuTorch: a portable kernel)
            return x.sum(1, keepdim=True)
        if v == "maxpool":
            return self.pool(x)
        if v == "cat":
            return torch.cat([x, x], 1)
        if v == "permute":
            return x.permute(0, 2, 3, 1)
        raise EdgekitError(f"sweep: no op for {self.kind} {v}")


def kernel_module(spec: Spec) -> nn.Module:
    """The kernel of a spec as a module (conv + BN + ReLU for the convolutions: the fused unit a network has)."""
    k, s = spec.k, spec.stride
    if spec.kind == "conv":
        return nn.Sequential(
            nn.Conv2d(spec.cin, spec.cout, k, s, k // 2, bias=False), nn.BatchNorm2d(spec.cout), nn.ReLU()
        )
    if spec.kind == "dwconv":
        c = spec.cin
        return nn.Sequential(nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU())
    if spec.kind == "pwconv":
        return nn.Sequential(nn.Conv2d(spec.cin, spec.cout, 1, bias=False), nn.BatchNorm2d(spec.cout), nn.ReLU())
    if spec.kind == "linear":
        return nn.Linear(spec.cin, spec.cout)
    return _Op(spec)


def _prefix_shape(spec: Spec) -> str:
    if spec.kind in ("linear", "matmul"):
        return "vector" if spec.h == 1 else "tokens"
    return "image"


class SweepNet(nn.Module):
    """Specs side by side: `p{i}` makes spec i's input from the image, `k{i}` is its kernel; the output is one number
    per kernel (the mean of its output), shape (1, n)."""

    def __init__(self, specs: list[Spec], root: int, with_kernels: bool = True) -> None:
        super().__init__()
        self.n = len(specs)
        self.with_kernels = with_kernels
        for i, spec in enumerate(specs):
            shape = _prefix_shape(spec)
            self.add_module(f"p{i}", _Prefix(root, spec.cin, 1 if shape == "vector" else spec.h, shape))
            if with_kernels:
                self.add_module(f"k{i}", kernel_module(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(self.n):
            y = getattr(self, f"p{i}")(x)
            if self.with_kernels:
                y = getattr(self, f"k{i}")(y)
            outs.append(y.mean())
        return torch.stack(outs).unsqueeze(0)


def build(specs: list[Spec], root: int, with_kernels: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return SweepNet(specs, root, with_kernels).eval()


# -- grids ---------------------------------------------------------------------------------------------------------


def _quick() -> list[Spec]:
    """Nine kernels at 32x32 (the per-op timer counts whole microseconds: smaller ones read 0)."""
    h = QUICK_ROOT
    return [
        *(Spec("conv", c, c, h, 3, 1) for c in (16, 24, 36)),
        *(Spec("dwconv", c, c, h, 3, 1) for c in (64, 100, 128)),
        *(Spec("pwconv", c, c, h) for c in (32, 48, 64)),
    ]


def _default() -> list[Spec]:
    out: list[Spec] = []
    for h in (56, 28, 14):
        for cin, cout in ((16, 16), (24, 32), (32, 36), (48, 64)):
            for s in (1, 2):
                out.append(Spec("conv", cin, cout, h, 3, s))
        for c in (24, 36, 64, 100, 128):
            for k, s in ((3, 1), (3, 2), (5, 1)):
                out.append(Spec("dwconv", c, c, h, k, s))
        for c in (24, 64, 128):  # 7x7 depthwise: XNNPACK runs it as an IGEMM (ConvNeXt, StarNet)
            out.append(Spec("dwconv", c, c, h, 7, 1))
    for h, cin, cout in ((28, 128, 128), (14, 256, 256), (7, 512, 512)):  # ResNet-scale dense convolutions
        out.append(Spec("conv", cin, cout, h, 3, 1))
    for h in (56, 28, 14, 7):
        for cin, cout in ((16, 32), (24, 24), (32, 36), (48, 64), (64, 100), (96, 128), (128, 128)):
            out.append(Spec("pwconv", cin, cout, h))
    for h, cin, cout in ((28, 256, 256), (14, 512, 512), (14, 256, 1024), (7, 1024, 1024), (7, 512, 1280)):
        out.append(Spec("pwconv", cin, cout, h))  # wide GEMMs whose weights leave the L2 cache (MobileOne, heads)
    for h in (7, 14):
        for cin, cout in ((64, 64), (96, 100), (128, 256), (192, 384)):
            out.append(Spec("linear", cin, cout, h))
    out += [Spec("linear", 256, 1000, 1), Spec("linear", 576, 1000, 1), Spec("linear", 1024, 1000, 1)]
    for h in (7, 14):
        for c in (32, 64, 100):
            out.append(Spec("matmul", c, c, h))
    for h in (28, 56):  # attention over 784 and 3136 tokens (a hierarchical ViT's first stages)
        for c in (32, 64):
            out.append(Spec("matmul", c, c, h))
            out.append(Spec("matmul", c // 2, c // 2, h, variant="windows"))  # 49 or 196 GEMMs of 16 tokens
    for h in (7, 14, 28):  # multi-head attention's scores over 49 to 784 tokens, 4 and 8 heads
        for c in (64, 128):
            out.append(Spec("matmul", c, c, h, variant="heads"))
    for h in (56, 28, 14):
        for c in (24, 64, 100):
            out += [Spec("elementwise", c, c, h, variant="add"), Spec("elementwise", c, c, h, variant="bcast")]
    for h, c in ((56, 24), (56, 100), (28, 24), (28, 100), (14, 100)):  # 19k to 314k elements
        out += [Spec("elementwise", c, c, h, variant=v) for v in ("sub", "mul", "maximum", "abs", "div")]
    for h, c in ((56, 1), (56, 64), (14, 64)):  # 3136 elements (a one-channel map at 56x56), 200k and 12.5k
        out += [Spec("elementwise", c, c, h, variant=v) for v in ("lt_to", "where", "masked_fill")]
    for h, c in ((56, 64), (28, 16), (14, 64)):
        out.append(Spec("reduce", c, 1, h, variant="std"))
    # 56x56: 100k-200k elements, 7-28 us, where the per-op timer's whole microseconds are within 10 % (at 14x14 a
    # SiLU read 3 us, 0.48 ns an element on LiteRT, against 0.12-0.16 in MobileViT's 112x112 to 14x14 layers)
    for h in (56, 28, 14):
        for c in (32, 64):
            for v in ("hardswish", "gelu", "sigmoid", "silu"):
                out.append(Spec("activation", c, c, h, variant=v))
    # softmax over rows of 16 (Swin's windows) to 3136 tokens (a hierarchical ViT's first stage), 16k to 3.2M
    # elements: its rate per element and per row had been learned from networks alone
    for h, c in ((4, 1024), (4, 4096), (7, 1024), (14, 784), (28, 256), (28, 784), (56, 256), (56, 1024)):
        out.append(Spec("activation", c, c, h, variant="softmax"))
    for h in (14, 7):
        for c in (64, 128, 256):
            out.append(Spec("reduce", c, c, h, variant="mean"))
    for h in (56, 28):
        for c in (32, 64):
            out.append(Spec("reduce", c, c, h, variant="maxpool"))
        for c in (48, 96):
            out.append(Spec("reduce", c, 1, h, variant="sum"))
    for h in (28, 14):
        for c in (24, 64):
            out.append(Spec("layout", c, 2 * c, h, variant="cat"))
            out.append(Spec("layout", c, c, h, variant="permute"))
    for h, c in ((28, 116), (14, 232), (7, 464)):  # ShuffleNetV2's stages
        out += [Spec("layout", c, c, h, variant="shuffle"), Spec("layout", c, c, h, variant="chunk")]
    return out


QUICK = "quick"
DEFAULT = "default"
GRIDS: dict[str, Callable[[], list[Spec]]] = {QUICK: _quick, DEFAULT: _default}


def grid(name: str = DEFAULT) -> list[Spec]:
    if name not in GRIDS:
        raise EdgekitError(f"unknown kernel grid '{name}'; choose {' or '.join(GRIDS)}")
    return GRIDS[name]()


def _root(name: str) -> int:
    return QUICK_ROOT if name == QUICK else SPATIAL_ROOT


def spec_kernels(spec: Spec, root: int) -> list[Kernel]:
    """The kernels of a spec's own module (`k0`) in a one-spec program: what its sample is stored as."""
    return [k for k in kernels_of(build([spec], root), root) if _in_module(k, 0) and k.kind != "free"]


def _in_module(k: Kernel, i: int) -> bool:
    return k.module is not None and (k.module == f"k{i}" or k.module.startswith(f"k{i}."))


def _sampled(k: Kernel, i: int, ms: float) -> bool:
    """Whether spec i's kernel `k`, timed `ms` from its rows, is stored as a sample: a kernel of the spec's own
    module, not free, timed, and not a layout copy the runtime inserted at the delegate's edge (`nchw_nhwc`). Those
    copies move data a one-kernel program just made, and every program has them: 179 in ExecuTorch's default sweep,
    each weighing what a network's rows of a kind weigh together, and they set the copy's rate below what networks
    pay (leave-one-family-out in `bench/predictor.py`: 68 % of networks within 10 % without them, 59 % with;
    ShuffleNetV2 -20 % against -34 %). A network's own rows teach that rate."""
    return _in_module(k, i) and k.kind != "free" and k.op != "nchw_nhwc" and ms > 0


# -- measuring -----------------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    target: str
    device: str
    threads: int
    precision: str
    grid: str
    specs: int
    samples: int  # kernels stored
    skipped: list[str]  # specs no sample came from (under the timer's resolution, or not lowered)
    programs: int

    def to_dict(self) -> dict:
        return asdict(self)


def rows_name_modules(target: str) -> bool:
    """Whether `target`'s per-op rows on this host carry module paths (`PER_OP_TARGETS`; LiteRT's where edgekit reads
    the installed ai-edge-litert's profiler events)."""
    if target == "tflite":
        return litert_profile.supported()
    return target in PER_OP_TARGETS


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def sweep(
    target: str,
    device: str,
    threads: int,
    db: LatencyDB,
    *,
    grid_name: str = DEFAULT,
    specs: list[Spec] | None = None,
    runs: int = 20,
    warmup: int = 3,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Measure the grid's kernels on (target, device, threads) and store them in `db` (`kernel_samples`)."""
    todo = list(specs) if specs is not None else grid(grid_name)
    root = _root(grid_name)
    say = progress or (lambda m: None)
    key = (target, device, threads, precision_of(None))
    stored, skipped, programs = 0, [], 0
    with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as tmp:
        work = Path(tmp)

        def run(net: nn.Module, name: str, per_op: bool) -> dict:
            nonlocal programs
            programs += 1
            art = compile_model(net, target, out=work, input_size=root, name=name, verify=False).artifact
            return profile(art, runs=runs, warmup=warmup, threads=threads, device=device, per_op=per_op)

        if rows_name_modules(target):
            for j, chunk in enumerate(_chunks(todo, PER_PROGRAM)):
                say(f"kernel sweep on {target}/{device}: program {j + 1}/{-(-len(todo) // PER_PROGRAM)}")
                net = build(chunk, root)
                report = run(net, f"sweep{j}", per_op=True)
                rows = report.get("ops") or []
                if not any(r.get("module") is not None for r in rows):
                    raise EdgekitError(
                        f"{target} on {device} gave no per-op rows with module paths; the kernel sweep needs them"
                    )
                times = kernels_from_rows(kernels_of(net, root, target=target), rows)
                samples = []
                for i, spec in enumerate(chunk):
                    mine = [(k, m) for k, m in zip(times.kernels, times.ms) if m is not None and _sampled(k, i, m)]
                    if not mine:
                        skipped.append(spec.name)
                    samples += [(_renamed(k, spec), m) for k, m in mine]
                db.add_kernel_samples(key, [(k.to_dict(), m) for k, m in samples], "sweep", created=report["created"])
                stored += len(samples)
        else:
            base: dict[tuple, float] = {}
            for j, spec in enumerate(todo):
                say(f"kernel sweep on {target}/{device}: {spec.name} ({j + 1}/{len(todo)})")
                pkey = (spec.cin, spec.h, _prefix_shape(spec))
                if pkey not in base:
                    base[pkey] = float(run(build([spec], root, with_kernels=False), f"base{j}", False)["median_ms"])
                total = float(run(build([spec], root), f"k{j}", False)["median_ms"])
                ks = spec_kernels(spec, root)
                diff = total - base[pkey]
                if not ks or diff <= 0:
                    skipped.append(spec.name)
                    continue
                main = max(ks, key=lambda k: k.macs or k.bytes_read + k.bytes_written)
                db.add_kernel_samples(key, [(_renamed(main, spec).to_dict(), diff)], "sweep")
                stored += 1
    return SweepResult(target, device, threads, key[3], grid_name, len(todo), stored, skipped, programs)


def _renamed(k: Kernel, spec: Spec) -> Kernel:
    """The kernel with its module named by the spec (`sweep/conv_k3s1_16x16_h56`), not by its slot in a program."""
    k.module = f"sweep/{spec.name}"
    return k


# -- a bundle for phones -------------------------------------------------------------------------------------------


def write_bundle(
    target: str,
    out: str | Path,
    *,
    grid_name: str = DEFAULT,
    device: str | None = None,
    specs: list[Spec] | None = None,
    only: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Compile the sweep's programs for `target` into `out` (one small artifact per spec, with its manifest) and
    write `manifest.json` listing each program's spec and kernels: what a demo app or adb runs, with per-op
    profiling, to measure the kernels on a phone; `import_bundle_report` reads the reports back. `only`: the spec
    names to include (the ones still missing). Returns the manifest's path."""
    todo = list(specs) if specs is not None else grid(grid_name)
    if only is not None:
        todo = [s for s in todo if s.name in only]
    root = _root(grid_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda m: None)
    programs = []
    for j, chunk in enumerate(_chunks(todo, PER_PROGRAM)):
        say(f"kernel bundle for {target}: program {j + 1}/{-(-len(todo) // PER_PROGRAM)}")
        net = build(chunk, root)
        res = compile_model(net, target, out=out, input_size=root, name=f"sweep{j:03d}", verify=False)
        programs.append(
            {
                "artifact": res.artifact.name,
                "sha256": res.manifest["sha256"],
                "specs": [{**asdict(s), "name": s.name, "module": f"k{i}"} for i, s in enumerate(chunk)],
                "kernels": [k.to_dict() for k in kernels_of(net, root, target=target) if k.kind != "free"],
            }
        )
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "target": target,
        "device": device,
        "grid": grid_name,
        "input_size": root,
        "how": (
            "run every artifact with per-op profiling on the device (the demo app's benchmark mode, or adb), then "
            "`edgekit latency calibrate --kernels --target TARGET --device DEVICE --reports DIR` with the reports"
        ),
        "programs": programs,
    }
    path = out / "manifest.json"
    write_json(path, manifest)
    return path


BUNDLE_SCHEMA = "edgekit-kernel-sweep/1"


def missing(db: LatencyDB, target: str, device: str, threads: int, grid_name: str = DEFAULT) -> list[Spec]:
    """The grid's specs the database has no sweep sample of for (target, device, threads), fp32."""
    have = {
        str(r["kernel"].get("module") or "").removeprefix("sweep/")
        for r in db.kernel_samples(target, device, threads)
        if r["source"] == "sweep"
    }
    return [s for s in grid(grid_name) if s.name not in have]


def import_bundle_report(report: dict, bundle: dict, db: LatencyDB) -> int:
    """Store the kernel samples of a (validated) report of one bundle program, measured on a phone: its per-op rows
    joined to the program's kernels (as the bundle's manifest lists them); the samples stored. A report of an
    artifact the bundle does not hold, or without per-op rows naming modules, is an error."""
    if bundle.get("schema") != BUNDLE_SCHEMA:
        raise EdgekitError(f"not a kernel sweep bundle's manifest (schema {bundle.get('schema')!r})")
    sha = report["artifact"]["sha256"]
    program = next((p for p in bundle["programs"] if p["sha256"] == sha), None)
    if program is None:
        raise EdgekitError(f"report of artifact {sha[:12]}: not one of the bundle's programs (compiled again since?)")
    rows = report.get("ops") or []
    if not any(r.get("module") is not None for r in rows):
        raise EdgekitError(
            f"report of {program['artifact']} has no per-op rows naming modules; run it with per-op profiling"
        )
    kernels = [Kernel.from_dict(k) for k in program["kernels"]]
    times = kernels_from_rows(kernels, rows)
    samples = []
    for i, spec in enumerate(program["specs"]):
        for k, m in zip(times.kernels, times.ms):
            if m is not None and _sampled(k, i, m):
                k.module = f"sweep/{spec['name']}"
                samples.append((k.to_dict(), m))
    key = (report["runtime"]["name"], report["device"]["name"], int(report["threads"]), precision_of(None))
    db.add_kernel_samples(key, samples, "sweep", created=report.get("created") or "")
    return len(samples)


def import_bundle_reports(bundle_dir: str | Path, reports: str | Path, db: LatencyDB) -> dict[str, int]:
    """`import_bundle_report` for every report (`*.json`) in the folder `reports` (or the one file), against the
    bundle in `bundle_dir`; {report file name: samples stored}."""
    path = Path(bundle_dir) / "manifest.json"
    try:
        bundle = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgekitError(f"kernel bundle manifest '{path}' cannot be read ({e}); give the bundle's folder") from None
    reports = Path(reports)
    files = sorted(reports.glob("*.json")) if reports.is_dir() else [reports]
    if not files:
        raise EdgekitError(f"no reports (*.json) in '{reports}'")
    return {f.name: import_bundle_report(load_report(f), bundle, db) for f in files}
