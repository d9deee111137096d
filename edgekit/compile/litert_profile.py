"""Per-op time of a `.tflite` on this host: LiteRT's own profiler, each kernel placed on the user's module.

ai-edge-litert's Python `Interpreter` has no op profiler, and its `CompiledModel` wrapper no way to switch one on.
The runtime it ships (`libLiteRt.so`) has both in its C API: a compiled model made with the runtime option
`enable_profiling` keeps a profiler whose events are XNNPACK's operators one by one (`Convolution (NHWC, F32) IGEMM`,
the names ExecuTorch's XNNPACK rows carry) and each TFLite operator run outside the delegate. This module calls that
API through ctypes, the way LiteRT's own `benchmark_model --enable_op_profiling` does in C++: no kept Python library
does it.

What the C API hands back is read as ai-edge-litert 2.3.0 lays it out, checked here against the library rather than
its published header: `LiteRtCreateModelFromFile(env, path, &model)` takes the environment first, and an event
(`ProfiledEventData`) is 104 bytes, its memory-usage records 24 bytes each where the header says 16
(`LiteRtGetProfilerEvents` divides the vector's bytes by 104). `LiteRtResetProfiler` also stops recording, so each
run is Reset, Start, run, Stop, read. Another ai-edge-litert version: `op_profile` returns None (the report then says
the host gives no per-op timing) rather than read events at the wrong offsets; pyproject pins 2.3.0.

XNNPACK's events name its operators alone, in the order it runs them, with its own operator index (from 0 in each
delegate partition); an operator run outside the delegate carries its TFLite node index. `align_events` lines the
XNNPACK events between two such anchors up with the model's nodes between them (a `CONV_2D` may run as a
`Convolution` or, 1x1, a `Fully Connected`; a `PAD` is fused into the convolution after it), and each node's module
is read from its output tensor's name (`TFLite.op_modules`). An event left unmatched (a layout copy XNNPACK inserts)
takes the module of the next placed one.
"""

from __future__ import annotations

import ctypes as C
import functools
import statistics
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from .attribution import ELIDABLE, align_events, event_kind
from .base import quiet

LAYOUT_VERSIONS = ("2.3.0",)  # ai-edge-litert versions whose C structs are read as below

_CPU = 1  # kLiteRtHwAcceleratorCpu
_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
# tflite::Profiler::EventType: an operator run outside a delegate, and a delegate's own operator (XNNPACK's kernels);
# the delegate node as a whole (4) would count its kernels twice
_OPERATOR, _DELEGATE_PROFILED_OP = 2, 8
_DELETER = C.CFUNCTYPE(None, C.c_void_p)

# TFLite builtin operator -> the kinds of XNNPACK operator it may become (`attribution.XNN_KINDS`' values)
_TFL_KINDS = {
    "CONV_2D": {"conv", "gemm"},
    "DEPTHWISE_CONV_2D": {"dwconv"},
    "TRANSPOSE_CONV": {"deconv"},
    "FULLY_CONNECTED": {"gemm"},
    "BATCH_MATMUL": {"bmm", "gemm"},
    "ADD": {"add"},
    "SUB": {"sub"},
    "MUL": {"mul"},
    "DIV": {"div"},
    "MAXIMUM": {"max"},
    "MINIMUM": {"min"},
    "RELU": {"clamp"},
    "RELU6": {"clamp"},
    "RELU_N1_TO_1": {"clamp"},
    "RELU_0_TO_1": {"clamp"},
    "HARD_SWISH": {"hardswish"},
    "LOGISTIC": {"sigmoid"},
    "TANH": {"tanh"},
    "GELU": {"gelu"},
    "ELU": {"elu"},
    "LEAKY_RELU": {"leaky_relu"},
    "SOFTMAX": {"softmax"},
    "SQRT": {"sqrt"},
    "RSQRT": {"rsqrt"},
    "SQUARE": {"square"},
    "EXP": {"exp"},
    "NEG": {"neg"},
    "ABS": {"abs"},
    "MEAN": {"mean"},
    "SUM": {"sum"},
    "AVERAGE_POOL_2D": {"avg_pool", "mean"},
    "MAX_POOL_2D": {"max_pool"},
    "TRANSPOSE": {"layout"},
    "RESHAPE": {"reshape"},
    "SQUEEZE": {"reshape"},
    "EXPAND_DIMS": {"reshape"},
    "CONCATENATION": {"cat", "reshape"},
    "SLICE": {"slice", "reshape"},
    "STRIDED_SLICE": {"slice", "reshape"},
    "SPLIT": {"split", "slice"},
    "SPLIT_V": {"split", "slice"},
    "PAD": {"pad"},
    "PADV2": {"pad"},
    "RESIZE_BILINEAR": {"resize"},
    "DEQUANTIZE": {"convert"},
    "QUANTIZE": {"convert"},
    "CAST": {"convert"},
}
_FUSED = ELIDABLE | {"pad"}  # LiteRT's XNNPACK delegate also folds a PAD into the convolution after it


class _Memory(C.Structure):
    _fields_ = [("footprint_kb", C.c_int64), ("allocated", C.c_uint64), ("in_use", C.c_uint64)]


class _Event(C.Structure):  # ProfiledEventData as ai-edge-litert 2.3.0 lays it out: 104 bytes
    _fields_ = [
        ("tag", C.c_char_p),
        ("event_type", C.c_int32),
        ("start_us", C.c_uint64),
        ("elapsed_us", C.c_uint64),
        ("begin", _Memory),
        ("end", _Memory),
        ("metadata1", C.c_uint64),
        ("metadata2", C.c_uint64),
        ("source", C.c_int32),
    ]


def supported() -> bool:
    """Whether the installed ai-edge-litert is one whose profiler events this module reads."""
    try:
        return metadata.version("ai-edge-litert") in LAYOUT_VERSIONS and C.sizeof(_Event) == 104
    except metadata.PackageNotFoundError:
        return False


@functools.cache  # one per process: the sweep profiles hundreds of programs
def _library() -> C.CDLL:
    import ai_edge_litert

    lib = C.CDLL(str(Path(ai_edge_litert.__file__).parent / "libLiteRt.so"), mode=C.RTLD_GLOBAL)
    p, i, z = C.c_void_p, C.c_int, C.c_size_t
    P = C.POINTER
    for name, args in {
        "LiteRtCreateEnvironment": [i, p, P(p)],
        "LiteRtCreateModelFromFile": [p, C.c_char_p, P(p)],
        "LiteRtCreateOptions": [P(p)],
        "LiteRtSetOptionsHardwareAccelerators": [p, i],
        "LiteRtCreateOpaqueOptions": [C.c_char_p, p, _DELETER, P(p)],
        "LiteRtAddOpaqueOptions": [p, p],
        "LiteRtCreateCompiledModel": [p, p, p, P(p)],
        "LiteRtGetModelSignature": [p, z, P(p)],
        "LiteRtGetNumSignatureInputs": [p, P(z)],
        "LiteRtGetNumSignatureOutputs": [p, P(z)],
        "LiteRtGetSignatureInputTensorByIndex": [p, z, P(p)],
        "LiteRtGetSignatureOutputTensorByIndex": [p, z, P(p)],
        "LiteRtGetRankedTensorType": [p, p],
        "LiteRtGetCompiledModelInputBufferRequirements": [p, z, z, P(p)],
        "LiteRtGetCompiledModelOutputBufferRequirements": [p, z, z, P(p)],
        "LiteRtCreateManagedTensorBufferFromRequirements": [p, p, p, P(p)],
        "LiteRtGetTensorBufferSize": [p, P(z)],
        "LiteRtLockTensorBuffer": [p, P(p), i],
        "LiteRtUnlockTensorBuffer": [p],
        "LiteRtRunCompiledModel": [p, z, z, P(p), z, P(p)],
        "LiteRtCompiledModelGetProfiler": [p, P(p)],
        "LiteRtStartProfiler": [p],
        "LiteRtStopProfiler": [p],
        "LiteRtResetProfiler": [p],
        "LiteRtGetNumProfilerEvents": [p, P(i)],
        "LiteRtGetProfilerEvents": [p, i, p],
    }.items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, i
    for name in ("LiteRtDestroyTensorBuffer", "LiteRtDestroyCompiledModel", "LiteRtDestroyOptions",
                 "LiteRtDestroyModel", "LiteRtDestroyEnvironment"):  # fmt: skip
        getattr(lib, name).argtypes, getattr(lib, name).restype = [p], None
    return lib


class _Profiled:
    """A compiled model with its profiler on, its input set to `x` (as the model takes it: NCHW, float32 or the
    int8 of a statically quantized model)."""

    def __init__(self, path: Path, x: np.ndarray, threads: int | None):
        self.lib = _library()
        self._undo: list[Callable[[], None]] = []
        try:
            self._open(path, x, threads)
        except BaseException:
            self.close()  # what was made before the failing call
            raise

    def _open(self, path: Path, x: np.ndarray, threads: int | None) -> None:
        lib = self.lib
        libc = C.CDLL(None)
        libc.strdup.argtypes, libc.strdup.restype = [C.c_char_p], C.c_void_p
        free = _DELETER(C.cast(libc.free, C.c_void_p).value or 0)
        self._keep = free  # the deleter LiteRT calls on the options' payloads
        env, model, opts, cm = C.c_void_p(), C.c_void_p(), C.c_void_p(), C.c_void_p()
        self._ok(lib.LiteRtCreateEnvironment(0, None, C.byref(env)), "create the environment")
        self._undo.append(lambda: lib.LiteRtDestroyEnvironment(env))
        self._ok(lib.LiteRtCreateModelFromFile(env, str(path).encode(), C.byref(model)), "load the model")
        self._undo.append(lambda: lib.LiteRtDestroyModel(model))
        self._ok(lib.LiteRtCreateOptions(C.byref(opts)), "create options")
        self._undo.append(lambda: lib.LiteRtDestroyOptions(opts))
        self._ok(lib.LiteRtSetOptionsHardwareAccelerators(opts, _CPU), "choose the CPU")
        toml = {"runtime_options_string": "enable_profiling = true\n"}
        if threads:
            toml["xnnpack"] = f"num_threads = {int(threads)}\n"
        for ident, text in toml.items():  # LiteRT owns each payload and frees it
            opaque = C.c_void_p()
            payload = libc.strdup(text.encode())
            self._ok(lib.LiteRtCreateOpaqueOptions(ident.encode(), payload, free, C.byref(opaque)), f"set {ident}")
            self._ok(lib.LiteRtAddOpaqueOptions(opts, opaque), f"add {ident}")
        self._ok(lib.LiteRtCreateCompiledModel(env, model, opts, C.byref(cm)), "compile the model")
        self._undo.append(lambda: lib.LiteRtDestroyCompiledModel(cm))
        self.cm = cm
        sig, nin, nout = C.c_void_p(), C.c_size_t(), C.c_size_t()
        self._ok(lib.LiteRtGetModelSignature(model, 0, C.byref(sig)), "read the signature")
        self._ok(lib.LiteRtGetNumSignatureInputs(sig, C.byref(nin)), "count the inputs")
        self._ok(lib.LiteRtGetNumSignatureOutputs(sig, C.byref(nout)), "count the outputs")
        ins = [self._buffer(env, sig, k, True) for k in range(nin.value)]
        outs = [self._buffer(env, sig, k, False) for k in range(nout.value)]
        self._fill(ins[0], np.ascontiguousarray(x))
        self.ins = (C.c_void_p * len(ins))(*ins)
        self.outs = (C.c_void_p * len(outs))(*outs)
        self.profiler = C.c_void_p()
        self._ok(lib.LiteRtCompiledModelGetProfiler(cm, C.byref(self.profiler)), "get the profiler")
        if not self.profiler.value:
            raise RuntimeError("LiteRT gave no profiler")

    def _ok(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"LiteRT could not {what} (status {status})")

    def _buffer(self, env, sig, k: int, is_input: bool) -> int:
        lib = self.lib
        tensor, req, buf = C.c_void_p(), C.c_void_p(), C.c_void_p()
        get = lib.LiteRtGetSignatureInputTensorByIndex if is_input else lib.LiteRtGetSignatureOutputTensorByIndex
        self._ok(get(sig, k, C.byref(tensor)), "read a tensor")
        ttype = C.create_string_buffer(512)  # LiteRtRankedTensorType, passed through unread
        self._ok(lib.LiteRtGetRankedTensorType(tensor, ttype), "read a tensor's type")
        need = (lib.LiteRtGetCompiledModelInputBufferRequirements if is_input
                else lib.LiteRtGetCompiledModelOutputBufferRequirements)  # fmt: skip
        self._ok(need(self.cm, 0, k, C.byref(req)), "read a buffer's requirements")
        self._ok(lib.LiteRtCreateManagedTensorBufferFromRequirements(env, ttype, req, C.byref(buf)), "make a buffer")
        self._undo.append(lambda: lib.LiteRtDestroyTensorBuffer(buf))
        return int(buf.value or 0)

    def _fill(self, buf: int, x: np.ndarray) -> None:
        size, addr = C.c_size_t(), C.c_void_p()
        self._ok(self.lib.LiteRtGetTensorBufferSize(buf, C.byref(size)), "size the input")
        if size.value < x.nbytes:
            raise RuntimeError(f"the input buffer holds {size.value} bytes, the input is {x.nbytes}")
        self._ok(self.lib.LiteRtLockTensorBuffer(buf, C.byref(addr), _WRITE), "lock the input")
        C.memmove(addr, x.ctypes.data, x.nbytes)
        self.lib.LiteRtUnlockTensorBuffer(buf)

    def run(self, profiled: bool) -> list[tuple[int, str, int, int]]:
        """One inference; with `profiled`, its events (type, tag, metadata1, microseconds) in the order recorded."""
        lib, prof = self.lib, self.profiler
        if profiled:
            self._ok(lib.LiteRtResetProfiler(prof), "reset the profiler")  # which also stops it
            self._ok(lib.LiteRtStartProfiler(prof), "start the profiler")
        self._ok(lib.LiteRtRunCompiledModel(self.cm, 0, len(self.ins), self.ins, len(self.outs), self.outs), "run")
        if not profiled:
            return []
        self._ok(lib.LiteRtStopProfiler(prof), "stop the profiler")
        n = C.c_int()
        self._ok(lib.LiteRtGetNumProfilerEvents(prof, C.byref(n)), "count the events")
        if n.value <= 0:
            return []
        events = (_Event * n.value)()
        self._ok(lib.LiteRtGetProfilerEvents(prof, n.value, events), "read the events")
        return [
            (int(e.event_type), (e.tag or b"").decode(errors="replace"), int(e.metadata1), int(e.elapsed_us))
            for e in events
            if e.event_type in (_OPERATOR, _DELEGATE_PROFILED_OP)
        ]

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def op_events(path: Path, x: np.ndarray, threads: int | None, runs: int = 20, warmup: int = 3) -> list[dict]:
    """Each operator event of one inference in run order, `{type, op, index, ms}` (`index`: the TFLite node of an
    operator run outside the delegate, XNNPACK's operator index inside it), its time the median of `runs` (a run
    whose events differ from the first run's, none seen, is left out)."""
    with quiet():
        prof = _Profiled(path, x, threads)
    try:
        for _ in range(warmup):  # the first run also allocates the tensors
            prof.run(profiled=False)
        runs_events = [prof.run(profiled=True) for _ in range(max(1, runs))]
    finally:
        prof.close()
    first = runs_events[0]
    same = [r for r in runs_events if [e[:3] for e in r] == [e[:3] for e in first]]
    return [
        {"type": t, "op": tag, "index": idx, "ms": statistics.median(r[k][3] for r in same) / 1e3}
        for k, (t, tag, idx, _) in enumerate(first)
    ]


def node_kinds(op_name: str) -> set[str]:
    """The kinds of XNNPACK operator a TFLite builtin may become (`_TFL_KINDS`; its own name lower-cased else)."""
    return _TFL_KINDS.get(op_name, {op_name.lower()})


def place(events: list[dict], nodes: list[str]) -> list[int | None]:
    """Each event's TFLite node index (None where none): an operator run outside the delegate by its own index, the
    XNNPACK operators between two of those by `align_events` against the nodes between them."""
    out: list[int | None] = [None] * len(events)
    lo, start = 0, 0
    for k in range(len(events) + 1):
        anchor = k < len(events) and events[k]["type"] == _OPERATOR
        if k < len(events) and not anchor:
            continue
        hi = int(events[k]["index"]) if anchor else len(nodes)
        span = range(start, k)
        kinds = [node_kinds(n) for n in nodes[lo:hi]]
        for e, j in zip(span, align_events([event_kind(events[e]["op"]) for e in span], kinds, _FUSED)):
            out[e] = None if j is None else lo + j
        if anchor:
            out[k] = hi
            lo = hi + 1
        start = k + 1
    return out
