"""What every target shares: compile options, tolerances, the runner interface, converter errors and quiet()."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import EdgekitError, UnsupportedOperatorError, first_line
from ..quantize import QuantSpec
from ..specs import CompileSpec


@dataclass
class CompileOptions:
    """The options a target's export reads; defaults from `CompileSpec`."""

    input_size: int = 224
    in_chans: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    delegate: str | None = CompileSpec.default("delegate")  # executorch: xnnpack (default), coreml, none
    precision: str = CompileSpec.default("precision")  # coreml compute precision: fp16 or fp32
    min_deployment_target: str = CompileSpec.default("min_target")  # coreml
    image_input: bool = CompileSpec.default("image_input")  # coreml: take an image, preprocessing baked in
    quant: QuantSpec | None = None  # None for float


@dataclass(frozen=True)
class Tolerance:
    """A breach of any bound fails verification. `atol + rtol * max|reference|` bounds the max abs error."""

    atol: float
    rtol: float
    min_cosine: float
    min_top1: float = 1.0  # over samples whose reference top-1 margin exceeds the error bound

    def to_dict(self) -> dict:
        return dict(atol=self.atol, rtol=self.rtol, min_cosine=self.min_cosine, min_top1=self.min_top1)


FP32 = Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.9999)
FP16 = Tolerance(atol=5e-2, rtol=2e-2, min_cosine=0.999, min_top1=0.9)
# Quantized artifacts are checked against the float model: an int8 program is expected to differ by its
# rounding, not by a wrong graph. The cosine carries the check (a broken conversion gives cosines far
# below these); int8 logits of a wide range can be off by a quarter of their range and still agree.
INT8 = Tolerance(atol=5e-2, rtol=0.35, min_cosine=0.98, min_top1=0.75)
W8 = Tolerance(atol=5e-2, rtol=0.05, min_cosine=0.995, min_top1=0.9)
W4 = Tolerance(atol=5e-2, rtol=0.25, min_cosine=0.95, min_top1=0.5)


@dataclass
class ExportInfo:
    """What a target reports about the artifact it wrote, for the manifest."""

    inputs: list[dict]
    outputs: list[dict]
    extra: dict[str, Any] = field(default_factory=dict)
    # Files written beside the artifact, each as `side_file(written, suffix)` for a suffix of the target's
    # `side_suffixes`: `compile` renames them with the artifact once verification passes, and removes them otherwise.
    side_files: list[str] = field(default_factory=list)


@dataclass
class Lowering:
    """What a runtime runs of an exported program beyond the program's own ops, as its compiler decides (for the
    kernel-level latency model, `edgekit.latency.kernels`): `portable` are the nodes of `program` (the runtime's
    graph of the export: ExecuTorch's edge program) that run outside every delegate, on the runtime's own kernels, and
    `moves` the nodes whose output the delegate copies into another memory layout (XNNPACK's NCHW <-> NHWC
    transposes), once each."""

    program: Any  # torch.export.ExportedProgram
    portable: list = field(default_factory=list)  # torch.fx.Node
    moves: list = field(default_factory=list)  # torch.fx.Node


def side_file(artifact: Path, suffix: str) -> Path:
    """The file beside `artifact` that carries `suffix` after its whole name (`m.pte` -> `m.pte.etrecord`)."""
    return artifact.with_name(artifact.name + suffix)


class Runner:
    """A loaded artifact: `run(x)` takes an NCHW float32 array and gives the first output as an array."""

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


def tensor_spec(name: str, shape, dtype) -> dict:
    return {"name": name, "shape": [int(s) for s in shape], "dtype": str(dtype).replace("torch.", "")}


_OP_PATTERNS = [
    r"OpOverload\(op='([\w.]+)'",
    r"target=torch\.ops\.([\w.]+)",
    r"(aten[.:]{1,2}[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)",
    r"Torch `(\w+)` op",
    r"fx node (\w+)",
    r"[Oo]perator[ :]+'?([A-Za-z0-9_:.]+)'?",
]


EXPORT_WRAPPER_PREFIX = "model."  # `export.ExportWrapper` holds the user's network as `.model`


def _graph_ops(model: nn.Module, example: torch.Tensor) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """The exported graph's ATen ops: short names (`linalg_inv`, `erfinv`), longest first; the modules each op is
    used in, in execution order; and each node's module (by node name, which converters' errors may quote)."""
    modules: dict[str, list[str]] = {}
    node_module: dict[str, str] = {}
    try:
        ep = torch.export.export(model, (example,))
    except Exception:
        return [], {}, {}
    for node in ep.graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            stack = node.meta.get("nn_module_stack") or {}
            path = next(reversed(stack.values()))[0] if stack else ""
            path = path.removeprefix(EXPORT_WRAPPER_PREFIX)  # the user's module path, not the export wrapper's
            where = modules.setdefault(name, [])
            if path not in where:
                where.append(path)
            node_module[node.name] = path
    return sorted(modules, key=len, reverse=True), modules, node_module


def _where(op: str, text: str, modules: dict[str, list[str]], node_module: dict[str, str]) -> str:
    """Which of the user's modules the failing op is in: a node the converter's message names, else the modules
    that use the op (the first of them, and how many, where it is used in many)."""
    for name in sorted(node_module, key=len, reverse=True):
        if node_module[name] and re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text):
            return f"in module '{node_module[name]}'"
    used = [m for m in modules.get(op.removeprefix("aten.").split(".")[0], []) if m]
    if not used:
        return ""
    if len(used) == 1:
        return f"in module '{used[0]}'"
    return f"used in {len(used)} modules, first '{used[0]}'"


def operator_from_error(text: str, graph_ops: Sequence[str] = ()) -> str | None:
    """The operator a converter's error names: by the converters' own phrasing first, then any op of the graph."""
    for pat in _OP_PATTERNS:
        m = re.search(pat, text)
        if m:
            return m.group(1).rstrip(".:'")
    for op in graph_ops:
        if re.search(rf"(?<![A-Za-z0-9_%]){re.escape(op)}(?![A-Za-z0-9_])", text):
            return f"aten.{op}"
    return None


def lowering_error(
    target: str,
    exc: BaseException,
    log: str,
    model: nn.Module,
    example: torch.Tensor,
    opts: CompileOptions | None = None,
) -> EdgekitError:
    """Turn a converter's exception into one line naming the operator (or, failing that, the converter's words)."""
    if opts is not None and opts.quant is not None:  # the float model converts; its quantized program did not
        return EdgekitError(
            f"{target} could not convert the --quantize {opts.quant.scheme} program ({type(exc).__name__}: "
            f"{first_line(str(exc))}); keep the offending layers float with --float-layer, or choose another scheme"
        )
    names, modules, node_module = _graph_ops(model, example)
    op = operator_from_error(str(exc), names) or operator_from_error(log)
    if op is None:
        return UnsupportedOperatorError(target, "unknown", f"{type(exc).__name__}: {first_line(str(exc))}")
    return UnsupportedOperatorError(target, op, _where(op, f"{exc}\n{log}", modules, node_module))


def on_macos() -> bool:
    return platform.system() == "Darwin"


class Captured:
    """Text the converters printed while `quiet()` was active."""

    def __init__(self) -> None:
        self.text = ""


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Silence converters: Python logging and warnings, progress bars, and C++ logs written to fd 1 / fd 2.

    What they printed is kept in the yielded object, so an error can quote it.
    """
    captured = Captured()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    levels = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        py_out, py_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = io.TextIOWrapper(open(os.dup(sink.fileno()), "wb"), write_through=True)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stdout, sys.stderr = py_out, py_err
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in levels:
                lg.setLevel(level)
            if old_tqdm is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = old_tqdm
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
