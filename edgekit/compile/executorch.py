"""ExecuTorch: `.pte` programs, XNNPACK-delegated by default, or ExecuTorch's Core ML backend; quantized with
XNNPACK's PT2E quantizer; per-op time from ETDump through the devtools Inspector; intermediate values by module
(`edgekit debug`) from ETDump's debug buffer, named through the ETRecord written beside the program."""

from __future__ import annotations

import contextlib
import io
import operator
import re
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, EdgekitError, UnsupportedOperatorError
from ..io import sha256_of
from ..quantize import QuantizationError, int8_quantizer, pt2e
from .attribution import align_events, event_kind, nearest_placed, op_rows
from .base import (
    EXPORT_WRAPPER_PREFIX,
    FP16,
    INT8,
    CompileOptions,
    ExportInfo,
    Lowering,
    Runner,
    Tolerance,
    lowering_error,
    on_macos,
    quiet,
    side_file,
    tensor_spec,
)
from .capture import module_path
from .manifest import loading, read_manifest
from .registry import Scheme, Target, register

DELEGATES = ("xnnpack", "coreml", "none")
ETRECORD_SUFFIX = ".etrecord"  # the ETRecord beside `NAME.pte`: `NAME.pte.etrecord`


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


def _is_4d(node: torch.fx.Node) -> bool:
    v = node.meta.get("val")
    return isinstance(v, torch.Tensor) and v.dim() == 4


def _xnnpack_moves(graph: torch.fx.Graph, tags: dict) -> list[torch.fx.Node]:
    """The nodes whose output XNNPACK copies between NCHW and NHWC, replaying the layout rules of its
    `ChannelsLastTaggedReshapePass` (which runs on each partition when the delegate is built) on the tagged graph:
    inside a partition, convolutions, pooling and `mean` take NHWC (their first input is copied to NHWC where it is
    not); `view_copy`, squeezes and `linear` take NCHW; any other op keeps its inputs' layout, and where they differ
    they are copied to NHWC if all are 4-D, else to NCHW. A partition's inputs come in NCHW and its NHWC outputs are
    copied back. One copy per producer and direction in a partition (the pass reuses it). Batch norms are folded and
    `getitem`s only unpack. Checked against the XNNPACK `Transpose` rows ExecuTorch's profiler gives for the networks of
    `bench/predictor.py` that no other kernel took: the same count in 8 of 14 networks (MobileNetV2 2 and 2,
    ShuffleNetV2 17 and 17), within 3 in 4 more (GhostNet 46 against 43 predicted)."""
    from executorch.backends.xnnpack._passes.channels_last_tagged_reshape_pass import (
        ChannelsLastTaggedReshapePass as Pass,
    )

    layout: dict[torch.fx.Node, bool] = {}  # node -> its output is NHWC
    made: set[tuple[torch.fx.Node, bool]] = set()
    moves: list[torch.fx.Node] = []

    def nhwc(x: torch.fx.Node, tag: str) -> bool:
        return tags.get(x) == tag and layout.get(x, False)

    def to(x: torch.fx.Node, want: bool, tag: str) -> None:
        if nhwc(x, tag) != want and (x, want) not in made and (_is_4d(x) or not want):
            made.add((x, want))
            moves.append(x)

    for n in graph.nodes:
        tag = tags.get(n)
        if n.op != "call_function" or tag is None:
            continue
        name = str(getattr(n.target, "__name__", n.target))
        ins = [x for x in n.all_input_nodes if isinstance(x.meta.get("val"), torch.Tensor)]
        if n.target in Pass.memory_sensitive_ops_nhwc:
            first = n.args[0]
            for x in first if isinstance(first, (list, tuple)) else [first]:
                if isinstance(x, torch.fx.Node):
                    to(x, True, tag)
            layout[n] = True
        elif n.target in Pass.memory_sensitive_ops_nchw or "view_copy" in name:
            for x in ins:
                to(x, False, tag)
            layout[n] = False
        elif n.target is operator.getitem or "batch_norm" in name:
            layout[n] = nhwc(n.args[0], tag)
        else:
            formats = [nhwc(x, tag) for x in ins]
            if formats and all(formats):
                layout[n] = True
            elif any(formats):
                layout[n] = all(_is_4d(x) for x in ins)
                for x in ins:
                    to(x, layout[n], tag)
            else:
                layout[n] = False
        if layout[n] and n.target is not operator.getitem and any(tags.get(u) != tag for u in n.users):
            if (n, False) not in made:  # an output of the partition: copied back to NCHW
                made.add((n, False))
                moves.append(n)
    return moves


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


def register_quantized_kernels() -> None:
    """Register the quantized kernels ((de)quantize) with the runtime and the exporter: a program quantized with
    `--delegate none` runs them outside any delegate (XNNPACK's programs need nothing)."""
    import executorch.kernels.quantized  # noqa: F401


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
            register_quantized_kernels()
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
    side_suffixes = (ETRECORD_SUFFIX,)
    runtime_module = "executorch.runtime"
    apps = ("android", "ios")
    adb_tool = "executor_runner"
    delegates = DELEGATES

    def check_options(self, opts: CompileOptions) -> None:
        if opts.delegate not in (None, *DELEGATES):
            raise EdgekitError(f"unknown ExecuTorch delegate '{opts.delegate}'; choose xnnpack, coreml or none")

    def check_quantization(self, scheme: Scheme, opts: CompileOptions) -> None:
        # `--delegate none` runs the same quantized program on the portable and quantized kernels, every operator an
        # instruction: what `edgekit debug` needs to rank the modules of an int8 program by the error they add.
        if (opts.delegate or "xnnpack") not in ("xnnpack", "none"):
            raise QuantizationError(
                f"--quantize {scheme.name} on ExecuTorch uses the XNNPACK quantizer: drop "
                f"--delegate {opts.delegate}, or use --delegate xnnpack (or none, to debug it)"
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
                    if delegate == "none":
                        register_quantized_kernels()
                ep = torch.export.export(model, (example,))
                # The ETRecord rides along (the edge program before lowering, the debug handle maps): the same
                # program bytes, for `capture`.
                edge = to_edge_transform_and_lower(
                    ep, partitioner=_partitioners(delegate, opts), generate_etrecord=True
                )
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
            side_files=[ETRECORD_SUFFIX] if write_etrecord(program, side_file(path, ETRECORD_SUFFIX)) else [],
        )

    def lowering(self, program: torch.export.ExportedProgram) -> Lowering | None:
        """XNNPACK's partition of `program` (its own partitioner, as `export` lowers), without building the delegate:
        the ops it leaves to the portable kernels, and the NCHW <-> NHWC copies it will insert (`_xnnpack_moves`).
        About 3-10 s for a mobile network (the edge dialect's decompositions), a quarter of a full lowering."""
        with quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            class Seen(Exception):
                pass

            class Tagging(XnnpackPartitioner):
                """Tags the nodes XNNPACK takes, keeps the tagged program, and stops the lowering there."""

                program = None

                def partition(self, ep):
                    result = super().partition(ep)
                    self.program = result.tagged_exported_program
                    raise Seen

            tagging = Tagging()
            try:
                to_edge_transform_and_lower(program, partitioner=[tagging])
            except Seen:
                pass
        edge = tagging.program
        if edge is None:
            return None
        tags = {n: n.meta.get("delegation_tag") for n in edge.graph.nodes}
        portable = [
            n
            for n in edge.graph.nodes
            if n.op == "call_function" and tags[n] is None and n.target is not operator.getitem
        ]
        return Lowering(program=edge, portable=portable, moves=_xnnpack_moves(edge.graph, tags))

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
        """Per-op rows, each with its module where the ETRecord beside the program is there to name it."""
        try:
            etrecord: Path | None = find_etrecord(path, read_manifest(path, check_sha256=False))
        except ArtifactError:
            etrecord = None  # a program compiled before edgekit wrote ETRecords: rows without modules
        return executorch_op_profile(path, x, threads, etrecord=etrecord)

    def capture(
        self, path: Path, manifest: dict, x: np.ndarray, model: nn.Module | None = None
    ) -> dict[str, np.ndarray] | None:
        """The program's intermediate values on `x` by module path, from ETDump's debug buffer (see
        `executorch_capture`), named through the ETRecord compile wrote beside the program.

        What the runtime logs is what each *instruction* outputs: with `--delegate none` every operator (portable
        kernels), so every module that computes something has a value; with XNNPACK (the default) or Core ML only
        the outputs of each delegate call (and of the operators left outside delegates): a delegate logs nothing of
        what runs inside it, so a whole-model partition gives the value of the module computing the logits (and
        its parents) alone. Where that is too coarse, compile with `--delegate none` to find the layer. None where
        the program cannot run here (a Core ML delegate off macOS). `model` is not needed: the ETRecord names the
        modules (a program compiled before edgekit wrote one raises an ArtifactError saying to compile again).
        """
        if self.runnable(manifest) is not None:
            return None
        return executorch_capture(path, find_etrecord(path, manifest), x)

    def capture_hint(self, manifest: dict) -> str:
        delegate = self.delegate_of(manifest)
        if delegate == "none":
            return super().capture_hint(manifest)
        return (
            f"the {delegate} delegate runs the network whole and logs its output alone; compile the same model with "
            "--delegate none (the same program, every operator an instruction, quantized too) and debug that"
        )

    def delegate_of(self, manifest: dict) -> str | None:
        return manifest.get("options", {}).get("delegate") or "xnnpack"

    def check_app(self, app: str, manifest: dict) -> None:
        if app == "android" and self.delegate_of(manifest) == "coreml":
            raise EdgekitError(
                "this .pte is delegated to Core ML, which runs on Apple devices only; bundle it with "
                "--app ios, or compile with --delegate xnnpack for Android"
            )


def executorch_op_profile(
    pte: str | Path, x: np.ndarray, threads: int | None, runs: int = 20, etrecord: Path | None = None
) -> list[dict]:
    """Median time per op (XNNPACK kernels inside delegates, portable kernels outside), each with the user's module
    where the ETRecord compiled with the program names it (see `_event_modules`)."""
    record, graph = _read_etrecord(etrecord) if etrecord is not None else (None, None)
    with quiet():
        from executorch.devtools import Inspector
        from executorch.extension.pybindings import portable_lib

        set_threads(threads)
        register_quantized_kernels()
        module = portable_lib._load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
        inp = (torch.from_numpy(np.ascontiguousarray(x)),)
        for _ in range(runs):
            module.forward(inp)
        with tempfile.TemporaryDirectory() as tmp:
            etdump = Path(tmp) / "run.etdp"
            module.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
            inspector = Inspector(etdump_path=str(etdump), etrecord=record)  # the record: events' debug handles
    events = [e for b in inspector.event_blocks if b.name == "Execute" for e in b.events]
    modules = _event_modules(events, graph) if graph is not None else {}
    times = []
    for i, e in enumerate(events):
        if e.name in _NOT_OPERATORS or e.name == "DELEGATE_CALL":
            continue
        raw = sorted(e.perf_data.raw) if e.perf_data is not None and e.perf_data.raw else [0.0]
        times.append((re.sub(r" #\d+$", "", e.name), modules.get(i), raw[len(raw) // 2]))
    return op_rows(times)


# -- per-op time by module: the delegate's kernels lined up with the edge program's nodes ------------------------
#
# A portable operator's event carries the debug handles of the nodes it computes, and so their module. XNNPACK's
# events carry its operator names alone ("Convolution (NHWC, F32) DWConv #3"), in the order its runtime runs them,
# grouped under the delegate call (same instruction) whose debug handles list the edge program's nodes inside it:
# `align_events` lines the two sequences up and gives each kernel its node. A kernel left unmatched (an inserted
# transpose) goes to the module of the nearest matched kernel after it (before it, at a delegate's end).

# edge op (ATen name) -> the kinds of XNNPACK operator it may become
_NODE_KINDS = {
    "convolution": {"conv", "gemm", "deconv"},
    "linear": {"gemm"},
    "addmm": {"gemm"},
    "mm": {"gemm", "bmm"},
    "bmm": {"bmm", "gemm"},
    "add": {"add"},
    "sub": {"sub"},
    "rsub": {"sub"},
    "mul": {"mul"},
    "div": {"div"},
    "maximum": {"max"},
    "minimum": {"min"},
    "hardtanh": {"clamp"},
    "relu": {"clamp"},
    "clamp": {"clamp"},
    "hardswish": {"hardswish"},
    "sigmoid": {"sigmoid"},
    "tanh": {"tanh"},
    "gelu": {"gelu"},
    "elu": {"elu"},
    "leaky_relu": {"leaky_relu"},
    "_softmax": {"softmax"},
    "sqrt": {"sqrt"},
    "rsqrt": {"rsqrt"},
    "pow": {"square"},
    "exp": {"exp"},
    "neg": {"neg"},
    "abs": {"abs"},
    "mean": {"mean"},
    "sum": {"sum"},
    "avg_pool2d": {"avg_pool"},
    "max_pool2d": {"max_pool"},
    "max_pool2d_with_indices": {"max_pool"},
    "permute_copy": {"layout"},
    "view_copy": {"reshape"},
    "squeeze_copy": {"reshape"},
    "unsqueeze_copy": {"reshape"},
    "expand_copy": {"reshape"},
    "cat": {"cat", "reshape"},
    "slice_copy": {"slice", "reshape"},
    "constant_pad_nd": {"pad"},
    "upsample_bilinear2d": {"resize"},
    "_to_copy": {"convert"},
    "clone": {"reshape"},
}


def _node_op(node: torch.fx.Node) -> str:
    """`convolution` for the edge op `aten.convolution.default`."""
    return str(getattr(node.target, "__name__", node.target)).removeprefix("aten.").split(".")[0]


def _node_kinds(node: torch.fx.Node) -> set[str]:
    op = _node_op(node)
    kinds = _NODE_KINDS.get(op, {op})
    if op == "convolution" and len(node.args) > 8:
        weight = node.args[1].meta.get("val") if isinstance(node.args[1], torch.fx.Node) else None
        groups = int(node.args[8])  # type: ignore[arg-type]  # convolution(..., groups): an int
        if weight is not None and groups > 1 and int(weight.shape[1]) == 1:
            return {"dwconv"}  # one input channel per group: a depthwise convolution
    return kinds


def _node_module(node: torch.fx.Node) -> str:
    """The user's path of the innermost module `node` was traced in, whichever call of it ("" for the model's own
    forward)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = str(next(reversed(stack.values()))[0]) if stack else ""
    return "" if path in ("", _WRAPPED) else module_path(path)


def instruction_of(event) -> int:
    """The instruction an Inspector event was logged in: what ties a delegate's kernels to the delegate call whose
    debug handles list its nodes. A private attribute of the devtools' `Event` (ExecuTorch 1.5);
    `tests/test_op_modules_executorch.py` fails where an upgrade drops it."""
    return event._instruction_id


def _event_modules(events: list, graph: torch.fx.Graph) -> dict[int, str]:
    """The user's module of each operator event (by its index in `events`) that can be placed."""
    return _placements(events, graph)[0]


def _aligned_events(events: list, graph: torch.fx.Graph) -> set[int]:
    """The events placed by their own debug handles or the alignment (not credited to a neighbouring kernel)."""
    return _placements(events, graph)[1]


def _placements(events: list, graph: torch.fx.Graph) -> tuple[dict[int, str], set[int]]:
    by_handle, position = _handle_index(graph)
    out: dict[int, str] = {}
    direct: set[int] = set()
    delegated: dict[int, list[int]] = defaultdict(list)  # instruction -> its delegate's kernel events
    calls: dict[int, Any] = {}  # the devtools Inspector's Event
    for i, e in enumerate(events):
        if e.name == "DELEGATE_CALL":
            calls[instruction_of(e)] = e
        elif e.is_delegated_op:
            delegated[instruction_of(e)].append(i)
        elif e.name not in _NOT_OPERATORS:
            nodes = _nodes_of(e.debug_handles, by_handle)
            if nodes:
                out[i] = _owner_module(nodes)
                direct.add(i)
    for instruction, members in delegated.items():
        call = calls.get(instruction)
        if call is None:
            continue
        inside = set(_nodes_of(call.debug_handles, by_handle))
        nodes = sorted(inside, key=position.__getitem__)
        members.sort(key=lambda k: events[k].start_time[0] if events[k].start_time else 0)
        matched = align_events([event_kind(events[k].name) for k in members], [_node_kinds(n) for n in nodes])
        modules = [_node_module(nodes[j]) if j is not None else None for j in matched]
        direct.update(k for k, j in zip(members, matched) if j is not None)
        for k, module in zip(members, nearest_placed(modules)):
            if module is not None:
                out[k] = module
    return out, direct


# -- intermediate values (`edgekit debug`): ETDump's debug buffer, named through the ETRecord ---------------------

_LATER_CALL = re.compile(r"@\d+$")  # nn_module_stack's key of a module's second, third... call
_WRAPPED = EXPORT_WRAPPER_PREFIX.rstrip(".")  # the user's model inside the export wrapper
# ETRecord entries `parse_etrecord` unpickles (`torch.load`, weights-only first, everything where that fails)
_PICKLED = ("_state_dict", "_constants", "_example_inputs", "reference_outputs", "representative_inputs")
_NOT_OPERATORS = {"OPERATOR_CALL", "Method::execute", "Method::init", "Program::load_method"}  # no values of their own


def write_etrecord(program, dest: Path) -> bool:
    """Save the ETRecord that `program` (lowered with `generate_etrecord=True`) carries at `dest`; False where
    there is none or it could not be written: a compile does not fail for want of it (`capture` then says so).
    `compile` commits it with the program (`NAME.pte.etrecord`) once the program is verified.

    `capture` reads the graph and the debug handle maps alone: the file keeps the edge program before lowering with
    its weights, constants and example inputs stubbed (each a single zero broadcast to its shape, so the graph still
    deserializes), leaves the ATen program out and is compressed: tens of KB (160 for GreedyViG-S) instead of twice
    the program. It cannot serve the devtools' re-runs of the reference graph (`Inspector.calculate_numeric_gap`).
    """
    try:
        record = program.get_etrecord()  # its own copy of the edge program: the program's bytes are written
        record.exported_program = None
        record.export_graph_id = None
        edge = record.edge_dialect_program
        for edge_program in edge.values() if isinstance(edge, dict) else [edge]:
            _stub_weights(edge_program)
        with quiet():
            record.save(str(dest))
            _deflate(dest)
    except Exception:
        with contextlib.suppress(OSError):
            dest.unlink(missing_ok=True)
        return False
    return True


def _stub(value):
    if not isinstance(value, torch.Tensor):
        return value
    stub = torch.zeros([1] * value.dim(), dtype=value.dtype).expand(value.shape)
    return nn.Parameter(stub, requires_grad=False) if isinstance(value, nn.Parameter) else stub


def _stub_weights(program: torch.export.ExportedProgram) -> None:
    """Replace the program's weights, constants and example inputs by a zero broadcast to each one's shape and
    dtype (in place)."""
    for table in (program.state_dict, program.constants):
        for name, value in list(table.items()):
            table[name] = _stub(value)
    with contextlib.suppress(Exception):  # the setter checks them against the signature: kept where it refuses
        args, kwargs = program.example_inputs
        program.example_inputs = (tuple(_stub(a) for a in args), {k: _stub(v) for k, v in kwargs.items()})


def _deflate(path: Path) -> None:
    """Compress the ETRecord's entries (it is saved stored; its graph's JSON shrinks tenfold)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(name, archive.read(name)) for name in archive.namelist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)


def find_etrecord(path: Path, manifest: dict) -> Path:
    """The ETRecord compiled with the program at `path` (`NAME.pte.etrecord`, its sha256 in the manifest's
    `side_files`), or an ArtifactError saying why there is none."""
    entry = (manifest.get("side_files") or {}).get(ETRECORD_SUFFIX)
    found = side_file(path, ETRECORD_SUFFIX)
    if not isinstance(entry, dict) or not found.is_file():
        raise ArtifactError(
            f"no ETRecord '{found.name}' beside '{path}' to name its intermediate values by module; compile the "
            "model again with this edgekit (it writes one) and keep the file beside the program"
        )
    if sha256_of(found) != entry.get("sha256"):
        raise ArtifactError(
            f"'{found}' is not the ETRecord compiled with '{path}' (its sha256 differs from the manifest's); "
            "compile the model again"
        )
    return found


def executorch_capture(pte: str | Path, etrecord: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The program's intermediate values on `x`, by the user's module path (see `edgekit.compile.capture`).

    The program runs once with ETDump and a debug buffer (`_load_for_executorch(enable_etdump=True,
    debug_buffer_size=...)`), which keeps every instruction's output: an operator's on the portable kernels, a
    delegate call's inputs and outputs. The devtools `Inspector` reads them back (`Event.debug_data`) and resolves
    each event's debug handles through the ETRecord; a debug handle names nodes of the edge program, whose
    `nn_module_stack` says which module computed the value. A delegate call's outputs are the values of the nodes
    inside it that are used outside it (matched by position, else by a shape only one of them has). Values are float
    arrays in PyTorch's layout (the runtime's tensors at instruction boundaries are contiguous NCHW).
    """
    pte, etrecord = Path(pte), Path(etrecord)
    record, graph = _read_etrecord(etrecord)
    inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with loading(pte, "ExecuTorch", "executorch"), quiet():
        check_program_header(pte)
        register_quantized_kernels()
        from executorch.extension.pybindings import portable_lib

        module = portable_lib._load_for_executorch(
            str(pte), enable_etdump=True, debug_buffer_size=_debug_buffer_bytes(graph, inp)
        )
    with quiet(), tempfile.TemporaryDirectory() as tmp:
        from executorch.devtools import Inspector

        module.forward((inp,))
        etdump, debug = Path(tmp) / "run.etdp", Path(tmp) / "debug.bin"
        module.write_etdump_result_to_file(str(etdump), str(debug))
        inspector = Inspector(etdump_path=str(etdump), etrecord=record, debug_buffer_path=str(debug))
    return _values_by_module(inspector, graph)


def _read_etrecord(etrecord: Path):
    """The parsed ETRecord, with the graph its debug handles name: the edge program's, before lowering."""
    try:
        _refuse_pickled_objects(etrecord)
        with quiet():
            from executorch.devtools import parse_etrecord

            record = parse_etrecord(str(etrecord))
        edge = record.edge_dialect_program
        if isinstance(edge, dict):
            edge = edge["forward"]
        return record, edge.graph_module.graph
    except ArtifactError:
        raise
    except ImportError as e:
        raise EdgekitError(
            f"could not read '{etrecord}': ExecuTorch is not installed ({e}); pip install 'edgekit[executorch]'"
        ) from None
    except Exception as e:
        raise ArtifactError(
            f"could not read the ETRecord '{etrecord}' ({type(e).__name__}: {e}); compile the model again"
        ) from None


def _refuse_pickled_objects(etrecord: Path) -> None:
    """Raise an ArtifactError where the ETRecord's pickled entries (the programs' weights, constants and example
    inputs) hold more than tensors and containers of them.

    `parse_etrecord` loads them weights-only but falls back to full unpickling, which runs whatever code the file
    names, where that fails: an ETRecord that came with someone else's artifact must not get that far.
    """
    with zipfile.ZipFile(etrecord) as archive:
        for name in archive.namelist():
            if not name.endswith(_PICKLED):
                continue
            data = archive.read(name)
            try:
                if data:
                    torch.load(io.BytesIO(data), weights_only=True)
            except Exception:
                raise ArtifactError(
                    f"the ETRecord '{etrecord}' holds objects other than tensors in '{name}', which reading it would "
                    "unpickle (and could run code); compile the model again to get one edgekit can read"
                ) from None


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _debug_buffer_bytes(graph: torch.fx.Graph, inp: torch.Tensor) -> int:
    """Room for every value the run logs: each operator's outputs, and a delegate call's inputs and outputs (so
    twice the edge program's values), 64-byte aligned, with slack for the copies lowering adds."""
    total, count = inp.numel() * inp.element_size(), 1
    for node in graph.nodes:
        if node.op == "call_function":
            for t in _tensors(node.meta.get("val")):
                total += int(t.numel()) * t.element_size()
                count += 1
    return 2 * total + 128 * count + (1 << 20)


def _handle_index(graph: torch.fx.Graph) -> tuple[dict[int, list[torch.fx.Node]], dict[torch.fx.Node, int]]:
    """The edge program's operator nodes by debug handle (the nodes one ATen op became share one), and each node's
    position in the graph."""
    by_handle: dict[int, list[torch.fx.Node]] = defaultdict(list)
    for node in graph.nodes:
        if node.op == "call_function":
            for h in _handles(node.meta.get("debug_handle")):
                by_handle[h].append(node)
    return by_handle, {node: i for i, node in enumerate(graph.nodes)}


def _nodes_of(handles, by_handle: dict[int, list[torch.fx.Node]]) -> list[torch.fx.Node]:
    """The nodes an event's debug handles (an int or nested lists of them) name, in the handles' order."""
    return [n for h in _handles(handles) for n in by_handle.get(h, [])]


def _handles(value) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, (tuple, list)):
        return [h for v in value for h in _handles(v)]
    return []


def _first_call_path(node: torch.fx.Node) -> str:
    """The (export wrapper's) path of the innermost module `node` was traced in, within the first call of each:
    export keys a module's later calls `...@1`, `...@2`, and what they compute belongs to the modules around the
    call alone (PyTorch's side keeps a module's first call)."""
    path = ""
    for key, entry in (node.meta.get("nn_module_stack") or {}).items():
        if _LATER_CALL.search(str(key)):
            break
        path = str(entry[0])
    return path


def _user_paths(path: str) -> list[str]:
    """A (wrapper's) module path and each module around it, as the user's model names them: `model.a.b` ->
    `a`, `a.b`. The wrapper and the user's model itself are none (an op in the model's own `forward` is the output
    of no submodule)."""
    parts = module_path(path).split(".") if path and path != _WRAPPED else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _last_handles(graph: torch.fx.Graph) -> dict[str, int]:
    """For each module, the debug handle of the last op computed in its first call: its output's."""
    last: dict[str, int] = {}
    for node in graph.nodes:
        handles = _handles(node.meta.get("debug_handle")) if node.op == "call_function" else []
        if handles:
            for path in _user_paths(_first_call_path(node)):
                last[path] = handles[-1]
    return last


def _shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    val = node.meta.get("val")
    return tuple(int(s) for s in val.shape) if isinstance(val, torch.Tensor) else None


def _values_by_module(inspector, graph: torch.fx.Graph) -> dict[str, np.ndarray]:
    """Each module's output, from the Inspector's events in execution order: a logged value is a module's where
    the op computing it is the last of the module's (first) call, so a module whose last op ran out of sight
    (inside a delegate) has none rather than an intermediate value of it."""
    by_handle, position = _handle_index(graph)
    last = _last_handles(graph)
    out: dict[str, np.ndarray] = {}
    for block in inspector.event_blocks:
        for event in block.events:
            handles = _handles(event.debug_handles)
            if event.name in _NOT_OPERATORS or not event.debug_data or not handles:
                continue
            if event.name == "DELEGATE_CALL":
                pairs = _delegate_outputs(event, handles, by_handle, position)
            else:
                pairs = _operator_output(event, handles, by_handle)
            for node, value in pairs:
                handle = _handles(node.meta.get("debug_handle"))[-1]
                if not value.is_floating_point():
                    continue  # int8 codes: the dequantized value that follows is the module's
                if _is_qdq(node):  # a (de)quantize op: its value is the output of the op it shares a handle with
                    node = next((n for n in by_handle[handle] if not _is_qdq(n)), node)
                mine = [p for p in _user_paths(_first_call_path(node)) if last.get(p) == handle]
                if mine:  # the later of two instructions an op became (a decomposition) holds its output
                    array = value.detach().float().cpu().numpy().copy()
                    out.update(dict.fromkeys(mine, array))
    return out


def _operator_output(event, handles: list[int], by_handle) -> list[tuple[torch.fx.Node, torch.Tensor]]:
    """An operator's (first) output, with the node it comes from (the nodes one ATen op became share a handle,
    and a module)."""
    nodes = _nodes_of(handles, by_handle)
    value = next((v for v in event.debug_data if isinstance(v, torch.Tensor)), None)
    if not nodes or value is None or not value.is_floating_point():  # an int8 code is no module's value
        return []
    own = [n for n in nodes if not _is_qdq(n)] or nodes
    same = [n for n in own if _shape(n) == tuple(value.shape)]
    return [((same or own)[-1], value)]


def _is_qdq(node: torch.fx.Node) -> bool:
    """A (de)quantize op of a quantized program: it shares the debug handle of the op whose output it quantizes (its
    dequantized output, logged after that op's, is the value the next layer reads) but carries no module."""
    return _node_op(node) == "quantized_decomposed"


def _owner_module(nodes: list[torch.fx.Node]) -> str:
    """The module of the op the nodes of one instruction belong to: not a (de)quantize op's (the model's own), but
    the op it quantizes, or for a weight's dequantize the layer that reads it."""
    own = [n for n in nodes if not _is_qdq(n)]
    if own:
        return _node_module(own[-1])
    users = [u for n in nodes for u in n.users if not _is_qdq(u)]
    return _node_module(users[0]) if users else _node_module(nodes[-1])


def _delegate_outputs(
    event, handles: list[int], by_handle, position: dict[torch.fx.Node, int]
) -> list[tuple[torch.fx.Node, torch.Tensor]]:
    """A delegate call's outputs (the last `num_outputs` values it logged, after its inputs), each with the node
    inside the delegate it is: the nodes used outside it, in graph order, or failing that the one of its shape."""
    inside = set(_nodes_of(handles, by_handle))
    ordered = sorted(inside, key=position.__getitem__)
    escaping = [n for n in ordered if _shape(n) is not None and any(u not in inside for u in n.users)]
    n_out = max(int(event.num_outputs or 1), 1)
    outs = [v for v in event.debug_data[-n_out:] if isinstance(v, torch.Tensor)]
    if len(escaping) == len(outs) and all(_shape(n) == tuple(v.shape) for n, v in zip(escaping, outs)):
        return list(zip(escaping, outs))
    pairs = []
    for v in outs:
        same = [n for n in escaping if _shape(n) == tuple(v.shape)]
        if len(same) == 1:
            pairs.append((same[0], v))
    return pairs
