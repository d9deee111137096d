"""The same 1x1 conv timed in different programs (ExecuTorch, XNNPACK, per-op rows): is a kernel's time its shape's?

The kernel model (`edgekit.latency.kernel_model`) predicts each kernel from its shape and sums. On this host its
largest misses are families whose 1x1 convs sit off the law together: GreedyViG's predicted 15-20 % fast on
ExecuTorch, MobileOne's up to 25 % slow on LiteRT. This bench times one GEMM shape per-op in programs that differ
around it:

- MobileOne-S0's 128 -> 128 at 28x28: alone (as the kernel sweep times it), after a depthwise conv (as in
  MobileOne), in a chain of four such pairs;
- GreedyViG-S's 192 -> 768 and 768 -> 192 at 14x14 (its third stage's FFN): in a chain of six of its
  inverted-residual blocks; the same chain after portable (non-delegated, one-thread) ops whose tensors die, and
  after portable ops that leave 30 tensors alive to the end (an 18 MB planned arena); and in greedyvig_s itself,
  with and without its graph (DAGC) blocks.

Every program is compiled first, then profiled in three rounds over all of them. Each line prints the program's
arena (ExecuTorch's planned memory for what runs outside the delegate), the median per-op time of the named convs
over the program's instances (the median of the rounds, and each round's), and that time against the first line of
its group, round by round. About 2 minutes on 2 cores: `python bench/context.py > bench/context.txt`.

Profiled once each (before the rounds), the same programs read 1.01x and 1.19x (30 tensors alive), 1.18x and 1.07x
(greedyvig_s) in two runs minutes apart, and one round here read MobileOne's conv after a depthwise conv at 124 us
against 66-67 in the other two: a single profile of a program is not its time.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from architectures import cpu_line  # noqa: E402

from edgekit.compile import compile as compile_model  # noqa: E402
from edgekit.latency.sweep import Spec, kernel_module  # noqa: E402
from edgekit.models import load_model  # noqa: E402
from edgekit.models.greedyvig import DAGCBlock, InvertedResidual  # noqa: E402
from edgekit.profile import profile  # noqa: E402

THREADS, RUNS, ROUNDS = 2, 30, 3


def pw(c: int) -> nn.Module:
    """The sweep's 1x1 conv + BN + ReLU (what `latency calibrate --kernels` times alone) at c -> c channels."""
    return kernel_module(Spec("pwconv", c, c, 28))


def dw(c: int) -> nn.Module:
    """The sweep's 3x3 depthwise conv + BN + ReLU."""
    return kernel_module(Spec("dwconv", c, c, 28, k=3))


def inverted_residual() -> nn.Module:
    block = InvertedResidual(192).eval()
    block.fuse_for_deploy()
    return block


class Portable(nn.Module):
    """`n` bool masks converted to float on a 56x56x48 map (ExecuTorch runs both outside XNNPACK, on one thread);
    `alive`: every mask kept to the end (the arena holds them all), else each consumed at once."""

    def __init__(self, n: int, alive: bool) -> None:
        super().__init__()
        self.n, self.alive = n, alive
        self.proj = nn.Conv2d(3, 48, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.proj(x)
        if self.alive:
            return [(y < -100.0 + i).to(y.dtype) for i in range(self.n)]
        for _ in range(self.n):
            y = y + (y < -100.0).to(y.dtype)
        return [y]


class Program(nn.Module):
    """The image (1, 3, 56, 56) pooled to `h` x `h`, projected to `cin` channels, through `body`; `portable` runs
    first on the full-size image and its outputs are summed into the result last."""

    def __init__(self, cin: int, h: int, body: nn.Module, portable: nn.Module | None = None) -> None:
        super().__init__()
        self.pool, self.proj, self.body, self.portable = nn.AvgPool2d(56 // h), nn.Conv2d(3, cin, 1), body, portable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.portable(x) if self.portable is not None else []
        z = self.body(self.proj(self.pool(x))).mean()
        for y in extra:
            z = z + y.mean()
        return z[None, None]


def arena_mb(artifact: Path) -> float:
    """The program's planned memory (MB) for what runs outside the delegate: its memory plan's buffer sizes, read from
    the `.pte` (executorch has no public reader of them: its private deserializer)."""
    from executorch.exir._serialize import _deserialize_pte_binary

    pte = _deserialize_pte_binary(artifact.read_bytes())
    program = getattr(pte, "program", pte)
    return sum(program.execution_plan[0].non_const_buffer_sizes) / 1e6


def programs() -> list[tuple[str, str, nn.Module, int, Callable[[dict], bool]]]:
    """(group, name, model, input size, which per-op rows are the convs timed)."""
    body = lambda r: "body" in str(r.get("module"))  # noqa: E731
    ffn = lambda r: ".pw" in (m := str(r.get("module"))) and ("backbone.2." in m or "body" in m)  # noqa: E731
    six = lambda: nn.Sequential(*[inverted_residual() for _ in range(6)])  # noqa: E731
    mo, gv = "MobileOne-S0's 128 -> 128 at 28x28", "GreedyViG-S's FFN 1x1 convs, 192 -> 768 and 768 -> 192 at 14x14"
    pairs = nn.Sequential(*[m for _ in range(4) for m in (dw(128), pw(128))])
    net = load_model("greedyvig_s", input_size=224).model.eval()
    bare = copy.deepcopy(net)
    for mod in bare.modules():
        for name, child in mod.named_children():
            if isinstance(child, DAGCBlock):
                setattr(mod, name, nn.Identity())
    return [
        (mo, "alone", Program(128, 28, nn.Sequential(pw(128))), 56, body),
        (mo, "after a 3x3 depthwise conv", Program(128, 28, nn.Sequential(dw(128), pw(128))), 56, body),
        (mo, "four (depthwise, 1x1) pairs", Program(128, 28, pairs), 56, body),
        (gv, "six inverted-residual blocks", Program(192, 14, six()), 56, ffn),
        (gv, "the same after 20 portable ops whose tensors die", Program(192, 14, six(), Portable(20, False)), 56, ffn),
        (
            gv,
            "the same with 30 portable-made tensors alive to the end",
            Program(192, 14, six(), Portable(30, True)),
            56,
            ffn,
        ),
        (gv, "greedyvig_s (stage 3's blocks)", net, 224, ffn),
        (gv, "greedyvig_s without its graph (DAGC) blocks", bare, 224, ffn),
    ]


def conv_us(art: Path, convs: Callable[[dict], bool]) -> float:
    """The median per-op time (us) of the rows `convs` accepts, in one `profile` of the artifact."""
    rep = profile(art, runs=RUNS, warmup=5, threads=THREADS, device="host", per_op=True)
    return statistics.median(
        r["ms"] / r.get("count", 1) * 1000 for r in rep["ops"] if r["op"].startswith("Fully") and convs(r)
    )


def main() -> None:
    torch.manual_seed(0)
    print(cpu_line())
    print(f"# ExecuTorch (XNNPACK), {THREADS} threads; per-op rows of the 1x1 convs (Fully Connected: XNNPACK runs a")
    print(f"# 1x1 conv as a GEMM), each program's median over its instances in one `profile` ({RUNS} runs); every")
    print(
        f"# program compiled first, then profiled in {ROUNDS} rounds over all of them: the median of the rounds, each"
    )
    print("# round's value, and the median against the group's first program (the ratio taken round by round)")
    with tempfile.TemporaryDirectory() as d:
        progs = []
        for i, (group, name, model, size, convs) in enumerate(programs()):
            art = compile_model(model.eval(), "executorch", out=Path(d), input_size=size, name=f"p{i}", verify=False)
            progs.append((group, name, Path(art.artifact), convs))
        times = [[conv_us(art, convs) for _, _, art, convs in progs] for _ in range(ROUNDS)]
        print(f"{'program':58s} {'arena MB':>8s} {'us':>6s} {'rounds':>16s} {'vs first':>8s}")
        first: dict[str, int] = {}
        for j, (group, name, art, _) in enumerate(progs):
            if group not in first:
                first[group] = j
                print(f"## {group}")
            per_round = [t[j] for t in times]
            ratio = statistics.median(t[j] / t[first[group]] for t in times)
            rounds = "/".join(f"{v:.0f}" for v in per_round)
            print(f"{name:58s} {arena_mb(art):8.1f} {statistics.median(per_round):6.0f} {rounds:>16s} {ratio:8.2f}")


if __name__ == "__main__":
    main()
