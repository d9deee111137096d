"""ExecuTorch: `.pte` programs, XNNPACK-delegated by default, or ExecuTorch's Core ML backend; quantized with
XNNPACK's PT2E quantizer; per-op time from ETDump through the devtools Inspector."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EdgekitError, UnsupportedOperatorError
from ..quantize import QuantizationError, int8_quantizer, pt2e
from .attribution import op_rows
from .base import (
    FP16,
    INT8,
    CompileOptions,
    ExportInfo,
    Runner,
    Tolerance,
    lowering_error,
    on_macos,
    quiet,
    tensor_spec,
)
from .manifest import loading
from .registry import Scheme, Target, register

DELEGATES = ("xnnpack", "coreml", "none")


def _partitioners(delegate: str, opts: CompileOptions) -> list:
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]
    if delegate == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend as ETCoreML
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        precision = ct.precision.FLOAT16 if opts.precision == "fp16" else ct.precision.FLOAT32
        specs = ETCoreML.generate_compile_specs(
            compute_precision=precision,
            minimum_deployment_target=getattr(ct.target, opts.min_deployment_target),
        )
        return [CoreMLPartitioner(compile_specs=specs)]
    return []


def delegation_summary(graph_module) -> dict:
    """Which operators were delegated and which run on ExecuTorch's portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    # `getitem` only unpacks tuples (a delegate's outputs): bookkeeping, not an operator that runs.
    by_op = {
        k: {"delegated": v.delegated, "not_delegated": v.non_delegated}
        for k, v in info.delegation_by_operator.items()
        if k != "getitem"
    }
    delegated = sum(v["delegated"] for v in by_op.values())
    total = delegated + sum(v["not_delegated"] for v in by_op.values())
    return {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": delegated,
        "not_delegated_nodes": total - delegated,
        "coverage": round(delegated / total, 4) if total else 1.0,
        "not_delegated_ops": sorted(k for k, v in by_op.items() if v["not_delegated"]),
        "by_operator": dict(sorted(by_op.items())),
    }


def registered_kernels() -> set[str]:
    from executorch.extension.pybindings import portable_lib

    return set(portable_lib._get_operator_names())


def set_threads(threads: int | None) -> None:
    """Resize the runtime's thread pool (XNNPACK's and the portable kernels'): it is process-wide.

    Resize before loading a method: a method loaded before a resize hangs when run after it.
    """
    if threads:
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != int(threads):
            portable_lib._unsafe_reset_threadpool(int(threads))


def check_program_header(path: Path) -> None:
    """Raise a ValueError where `path` does not start as a .pte program does, or is shorter than its header says.

    The runtime must not see such a file: it logs the identifier it found, and random bytes there abort the
    process (the log line is not UTF-8) instead of raising.
    """
    with open(path, "rb") as fh:
        head = fh.read(64)
        size = fh.seek(0, 2)
    ident = head[4:8]
    if len(head) < 8 or ident[:2] != b"ET" or not (48 <= ident[2] <= 57 and 48 <= ident[3] <= 57):
        raise ValueError(f"no ExecuTorch program identifier (ET..) at byte 4 but {ident!r}")
    if head[8:12] == b"eh00" and len(head) >= 32:  # the extended header: program size, segment offset [, size]
        length = int.from_bytes(head[12:16], "little")
        program = int.from_bytes(head[16:24], "little")
        base = int.from_bytes(head[24:32], "little")
        segments = int.from_bytes(head[32:40], "little") if length >= 32 and len(head) >= 40 else 0
        needed = max(program, base + segments if base else 0)
        if size < needed:
            raise ValueError(f"truncated: {size} bytes where its header says {needed}")


class ExecuTorchRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        with loading(path, "ExecuTorch", "executorch"), quiet():
            check_program_header(path)
            from executorch.runtime import Runtime

            set_threads(threads)
            self.method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.method.execute([torch.from_numpy(np.ascontiguousarray(x))])[0].numpy()


@register
class ExecuTorch(Target):
    name = "executorch"
    title = "ExecuTorch"
    suffix = ".pte"
    schemes = (Scheme("int8", INT8, calibrated=True, simulated=True), Scheme("int8-dynamic", INT8, simulated=True))
    packages = ("executorch", "coremltools")  # coremltools: the Core ML delegate
    runtime_package = "executorch"
    runtime_module = "executorch.runtime"
    apps = ("android", "ios")
    adb_tool = "executor_runner"
    delegates = DELEGATES

    def check_options(self, opts: CompileOptions) -> None:
        if opts.delegate not in (None, *DELEGATES):
            raise EdgekitError(f"unknown ExecuTorch delegate '{opts.delegate}'; choose xnnpack, coreml or none")

    def check_quantization(self, scheme: Scheme, opts: CompileOptions) -> None:
        if (opts.delegate or "xnnpack") != "xnnpack":
            raise QuantizationError(
                f"--quantize {scheme.name} on ExecuTorch uses the XNNPACK quantizer: drop "
                f"--delegate {opts.delegate} or use --delegate xnnpack"
            )

    def artifact_suffix(self, opts: CompileOptions) -> str:
        delegate = opts.delegate or "xnnpack"
        return self.suffix if delegate == "xnnpack" else f".{delegate}{self.suffix}"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, opts: CompileOptions) -> ExportInfo:
        delegate = opts.delegate or "xnnpack"
        with quiet() as log:
            from executorch.exir import to_edge_transform_and_lower

            error = None
            try:
                if opts.quant is not None:
                    q = opts.quant
                    model = pt2e(model, example, int8_quantizer(q.dynamic, q.float_layers), q.calib)
                ep = torch.export.export(model, (example,))
                edge = to_edge_transform_and_lower(ep, partitioner=_partitioners(delegate, opts))
                delegation = delegation_summary(edge.exported_program().graph_module)
                program = edge.to_executorch()
            except Exception as e:
                error = e
        if error is not None:
            raise lowering_error(self.name, error, log.text, model, example, opts) from None
        missing = self._missing_kernels(program)
        if missing:
            raise UnsupportedOperatorError(self.name, missing[0], "no ExecuTorch kernel and no delegate for it")
        path.write_bytes(program.buffer)
        out = model(example)
        return ExportInfo(
            inputs=[tensor_spec("input", example.shape, example.dtype)],
            outputs=[tensor_spec("logits", out.shape, out.dtype)],
            extra={"delegate": delegate, "delegation": delegation},
        )

    @staticmethod
    def _missing_kernels(program) -> list[str]:
        """Operators left outside every delegate that the runtime has no kernel for (would fail at load)."""
        try:
            known = registered_kernels()
        except Exception:  # pybindings unavailable: nothing to check against
            return []
        missing = []
        for plan in program.executorch_program.execution_plan:
            for op in plan.operators:
                full = f"{op.name}.{op.overload}" if op.overload else op.name
                if full not in known and op.name not in known and full not in missing:
                    missing.append(full)
        return missing

    def runnable(self, manifest: dict) -> str | None:
        if manifest.get("delegate") == "coreml" and not on_macos():
            return "the Core ML delegate runs on Apple devices only; verify this artifact on macOS"
        return None

    def load(self, path: Path, manifest: dict, threads: int | None = None) -> Runner:
        return ExecuTorchRunner(path, threads)

    def tolerance_for(self, manifest: dict) -> Tolerance:
        if manifest.get("delegate") == "coreml" and manifest.get("options", {}).get("precision") == "fp16":
            return FP16
        return super().tolerance_for(manifest)

    def op_profile(self, path: Path, x: np.ndarray, threads: int | None) -> list[dict] | None:
        return executorch_op_profile(path, x, threads)

    def delegate_of(self, manifest: dict) -> str | None:
        return manifest.get("options", {}).get("delegate") or "xnnpack"

    def check_app(self, app: str, manifest: dict) -> None:
        if app == "android" and self.delegate_of(manifest) == "coreml":
            raise EdgekitError(
                "this .pte is delegated to Core ML, which runs on Apple devices only; bundle it with "
                "--app ios, or compile with --delegate xnnpack for Android"
            )


def executorch_op_profile(pte: str | Path, x: np.ndarray, threads: int | None, runs: int = 20) -> list[dict]:
    """Median time per op kind (XNNPACK kernels inside delegates, portable kernels outside)."""
    with quiet():
        from executorch.devtools import Inspector
        from executorch.extension.pybindings import portable_lib

        set_threads(threads)
        module = portable_lib._load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
        inp = (torch.from_numpy(np.ascontiguousarray(x)),)
        for _ in range(runs):
            module.forward(inp)
        with tempfile.TemporaryDirectory() as tmp:
            etdump = Path(tmp) / "run.etdp"
            module.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
            df = Inspector(etdump_path=str(etdump)).to_dataframe()
    times = []
    for _, row in df[df.event_block_name == "Execute"].iterrows():
        name = str(row.event_name)
        if name in ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"):
            continue
        raw = sorted(row.raw) if row.raw else [0.0]
        times.append((re.sub(r" #\d+$", "", name), None, raw[len(raw) // 2]))
    return op_rows(times)
