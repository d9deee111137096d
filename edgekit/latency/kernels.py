"""A network split into the kernels its runtime runs: what the kernel-level latency model predicts, one by one.

`kernels_of` exports the model's export form (`prepare_for_export`, `torch.export.export`) and walks the graph in
order, turning every node into a unit the runtime's delegate would run, or folding it into one:

- a convolution with the batch norm after it (folded into its weights) and a clamp-like activation after that
  (ReLU, ReLU6/hardtanh, clamp: XNNPACK's output min/max) is one kernel: `conv` (a kxk dense or grouped conv,
  XNNPACK's IGEMM), `dwconv` (depthwise: one input channel per group) or `pwconv` (1x1, dense: a GEMM);
- `linear` (a batch norm and a clamp-like activation after it fold in the same way); a GEMM whose second operand
  is a weight (`mm`, `addmm` on a parameter) is a `linear` too;
- `matmul`: a product of two activations (`q @ k^T`, `attn @ v`, bmm); `scaled_dot_product_attention` is the two
  products and the softmax between them;
- `elementwise`: add, sub, mul, div, comparisons, abs, ... with broadcast (a clamp-like activation after an add,
  sub or mul folds in, as XNNPACK fuses it); a batch norm not after a conv or linear is one too (a per-channel
  affine: XNNPACK runs it as a 1x1 depthwise conv);
- `activation`: an activation that is not folded (GELU, hardswish, sigmoid, SiLU, tanh, softmax, exp, ... and a
  ReLU whose producer cannot take it);
- `norm`: layer, group, instance and RMS norm (one kernel here; runtimes run them decomposed);
- `reduce`: mean, sum, max, std, pooling;
- `layout`: copies that move data: permute, transpose, cat, stack, slice and select that drop elements, split,
  pad, roll, repeat, gathers, dtype conversions;
- `free`: views and what the runtime elides (reshape, flatten, (un)squeeze, expand, dropout, clone, constants).

Any other op is a kind of its own, named by its ATen op (e.g. `upsample_bilinear2d`), so that a fit which never saw
it says so. Each kernel carries the user's module path (the innermost `nn_module_stack` entry of its first node,
the export wrapper's prefix removed), its shape (channels, spatial size, kernel, stride, groups; GEMM M/N/K),
elements, MACs and bytes read and written. `kernels_from_rows` joins measured per-op rows (ExecuTorch's, each
named by the module it ran for) to the kernels.
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ..compile import Lowering, get_target, prepare_for_export
from ..compile.base import EXPORT_WRAPPER_PREFIX
from ..compile.capture import module_path

__all__ = [
    "KINDS",
    "COMPUTE_KINDS",
    "Kernel",
    "KernelTimes",
    "kernels_of",
    "kernels_from_rows",
    "export_of",
    "as_run_by",
    "row_kinds",
    "row_match",
    "kernels_of_program",
]

COMPUTE_KINDS = ("conv", "dwconv", "pwconv", "linear", "matmul")
FAR_MB = (1, 4, 16)  # how far back (MB of traffic) a kernel's input was made: the `far_*` fields
KINDS = (*COMPUTE_KINDS, "elementwise", "activation", "norm", "reduce", "layout", "free")

_CONV = {"convolution", "conv2d", "conv1d", "conv3d", "_convolution", "conv_transpose2d", "conv_transpose1d"}
_BN = {"batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"}
_CLAMP = {"relu", "relu6", "hardtanh", "clamp", "clamp_min", "clamp_max"}
_FUSES_CLAMP = {"add", "sub", "mul"}  # elementwise ops XNNPACK fuses a clamp into (and convolution, linear)
_LINEAR = {"linear"}
_GEMM = {"mm", "addmm", "bmm", "baddbmm", "matmul"}
_ELEMENTWISE = {
    "add", "sub", "rsub", "mul", "div", "maximum", "minimum", "pow", "neg", "abs", "square", "where", "masked_fill",
    "lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or",
    "floor", "ceil", "round", "sign", "fmod", "remainder", "reciprocal", "addcmul", "addcdiv", "lerp", "fill",
}  # fmt: skip
_ACTIVATION = {
    "gelu", "hardswish", "hardsigmoid", "sigmoid", "silu", "mish", "tanh", "softmax", "_softmax", "log_softmax",
    "_log_softmax", "elu", "leaky_relu", "prelu", "_prelu_kernel", "softplus", "exp", "log", "sqrt", "rsqrt", "erf",
    "sin", "cos", "glu", "celu", "selu",
}  # fmt: skip
_NORM = {
    "layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm", "rms_norm",
    "_fused_rms_norm",
}  # fmt: skip
_REDUCE = {
    "mean", "sum", "amax", "amin", "max", "min", "std", "var", "std_mean", "var_mean", "prod", "argmax", "argmin",
    "logsumexp", "norm", "linalg_vector_norm", "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d",
    "max_pool2d_with_indices", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
    "adaptive_max_pool2d",
}  # fmt: skip
_LAYOUT = {
    "permute", "transpose", "t", "cat", "concat", "stack", "slice", "select", "narrow", "split", "split_with_sizes",
    "chunk", "unbind", "tensor_split", "constant_pad_nd", "pad", "reflection_pad2d", "replication_pad2d", "roll",
    "repeat", "tile", "flip", "pixel_shuffle", "pixel_unshuffle", "index", "index_select", "gather", "take",
    "channel_shuffle", "to", "_to_copy", "type_as", "movedim", "swapaxes", "unfold", "im2col", "col2im",
    "slice_scatter", "select_scatter", "copy", "index_put",
}  # fmt: skip
_FREE = {
    "view", "_unsafe_view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "expand", "expand_as",
    "dropout", "feature_dropout", "alpha_dropout", "native_dropout", "detach", "alias", "contiguous", "clone",
    "lift_fresh", "lift_fresh_copy", "zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "zeros",
    "ones", "full", "empty", "arange", "scalar_tensor", "_reshape_alias", "as_strided", "view_as", "reshape_as",
    "identity", "dim_order_ops", "_clone_dim_order",
}  # fmt: skip
# views that drop nothing are free (a full-range slice, a select of a size-1 dim); a split, chunk or unbind is a
# copy in the runtimes here (XNNPACK's Even Split or Slice, LiteRT's SPLIT)
_MAYBE_FREE = {"slice", "select", "narrow"}
_SKIP_PREFIX = ("_assert", "sym_", "_local_scalar", "_check", "scalar_tensor_item")

_WRAPPED = EXPORT_WRAPPER_PREFIX.rstrip(".")


@dataclass
class Kernel:
    """One unit the runtime runs. Shapes are batch-1 NCHW as the network sees them; a field that does not apply to a
    kind is 0. `macs` counts multiply-accumulates (compute kinds only); `elements` is the output's elements for a
    compute kind and the largest tensor read or written for the others; bytes count activations and weights read
    (a broadcast operand at its own size) and the output(s) written."""

    kind: str
    op: str  # the ATen op that anchors the unit (`convolution`, `linear`, `add`, ...)
    module: str | None  # the user's module path ("" for the model's own forward), None where the node has none
    fused: tuple[str, ...] = ()  # ops folded into it (`batch_norm`, `hardtanh`)
    dtype: str = "float32"
    cin: int = 0
    cout: int = 0
    h: int = 0
    w: int = 0
    out_h: int = 0
    out_w: int = 0
    k: int = 0  # kernel size (the larger side)
    stride: int = 0
    groups: int = 0
    gemm_m: int = 0  # GEMM view: M rows (output pixels or tokens), N output channels, K the reduction
    gemm_n: int = 0
    gemm_k: int = 0
    batch: int = 0  # independent GEMMs (matmul: batch x heads)
    elements: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    broadcast: bool = False  # an elementwise op with an operand smaller than its output
    portable: bool = False  # run outside the delegate, on the runtime's own kernels (`kernels_of(..., target=)`)
    # bytes read that were last touched more than 1, 4 or 16 MB of traffic earlier (written since, and weights read):
    # inputs made long before, and weights where a whole run's traffic exceeds that; likely out of the caches by then
    # (`_Splitter.kernels`)
    far_1m: int = 0
    far_4m: int = 0
    far_16m: int = 0

    def features(self) -> dict[str, float]:
        """The numbers the kernel model reads (every numeric field, and `bytes` = read + written)."""
        out = {f.name: float(getattr(self, f.name)) for f in fields(self) if f.name not in _NOT_FEATURES}
        out["bytes"] = float(self.bytes_read + self.bytes_written)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fused"] = list(self.fused)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Kernel:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["fused"] = tuple(kw.get("fused") or ())
        return cls(**kw)


_NOT_FEATURES = {"kind", "op", "module", "fused", "dtype"}


# -- the graph ----------------------------------------------------------------------------------------------------


def _op_name(node: torch.fx.Node) -> str | None:
    """`convolution` for `aten.convolution.default`, `relu` for `aten.relu_.default`, `permute` for the edge
    dialect's `permute_copy`; None for what is not an ATen op (getitem, symbolic sizes)."""
    target = node.target
    if target is operator.getitem or node.op != "call_function":
        return None
    packet = getattr(target, "overloadpacket", None)
    name = getattr(packet, "__name__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str):
        return None
    name = name.split(".")[-1]
    if name.startswith(_SKIP_PREFIX):
        return None
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]  # in-place relu_ is relu
    if name.endswith("_copy") and name not in ("_to_copy", "lift_fresh_copy"):
        name = name[: -len("_copy")]  # the edge dialect's functional views
    return name


def _val(arg: Any) -> Any:
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _nbytes(t: torch.Tensor) -> int:
    return int(t.numel()) * t.element_size()


def _input_tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    """The tensors a node reads, each once."""
    seen: set[torch.fx.Node] = set()
    out: list[torch.Tensor] = []

    def visit(a: Any) -> None:
        if isinstance(a, torch.fx.Node):
            if a not in seen:
                seen.add(a)
                out.extend(_tensors(_val(a)))
        elif isinstance(a, (list, tuple)):
            for x in a:
                visit(x)

    visit(list(node.args))
    visit(list(node.kwargs.values()))
    return out


def _arg(node: torch.fx.Node, name: str, index: int, default: Any) -> Any:
    """An argument by its schema name, or position, or its default."""
    if name in node.kwargs:
        return node.kwargs[name]
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        for i, a in enumerate(schema.arguments):
            if a.name == name:
                return node.args[i] if i < len(node.args) else default
        return default
    return node.args[index] if index < len(node.args) else default


def _module(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = str(next(reversed(stack.values()))[0])
    return "" if path in ("", _WRAPPED) else module_path(path)


def _first(value: Any, default: int) -> int:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else default
    return int(value) if value is not None else default


def _sole_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _output(node: torch.fx.Node) -> torch.fx.Node:
    """The node holding a multi-output op's first output (its getitem 0), else the node."""
    if isinstance(_val(node), (list, tuple)):
        for u in node.users:
            if u.target is operator.getitem and u.args[1] == 0:
                return u
    return node


class _Splitter:
    def __init__(self, ep: torch.export.ExportedProgram) -> None:
        self.graph = ep.graph
        sig = ep.graph_signature
        self.weights = set(sig.inputs_to_parameters) | set(sig.inputs_to_buffers)
        self.weights |= set(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
        self.absorbed: set[torch.fx.Node] = set()

    def is_weight(self, arg: Any) -> bool:
        """A parameter or buffer, possibly seen through views (a weight's `t` or `permute`)."""
        while isinstance(arg, torch.fx.Node):
            if arg.op == "placeholder":
                return arg.name in self.weights
            if arg.op == "get_attr":
                return True
            if _op_name(arg) in ("t", "permute", "transpose", "view", "reshape", "expand", "detach"):
                arg = arg.args[0]
                continue
            return False
        return False

    def activation_bytes(self, node: torch.fx.Node) -> int:
        return sum(_nbytes(t) for a in node.all_input_nodes if not self.is_weight(a) for t in _tensors(_val(a)))

    def weight_bytes(self, node: torch.fx.Node) -> int:
        return sum(_nbytes(t) for a in node.all_input_nodes if self.is_weight(a) for t in _tensors(_val(a)))

    def absorb_after(self, node: torch.fx.Node, bn: bool, clamp: bool) -> tuple[torch.fx.Node, list[str]]:
        """Fold a batch norm (where `bn`) and then a clamp-like activation (where `clamp`) that are the sole users
        of `node`'s output, as XNNPACK's FuseBatchNormPass and FuseActivationPass do; (the unit's last node, the
        folded ops)."""
        last, fused = _output(node), []
        nxt = _sole_user(last)
        if bn and nxt is not None and _op_name(nxt) in _BN and nxt.args[0] is last:
            self.absorbed.add(nxt)
            out = _output(nxt)
            if out is not nxt:
                self.absorbed.add(out)
            last = out
            fused.append("batch_norm")
            nxt = _sole_user(last)
        if clamp and nxt is not None and _op_name(nxt) in _CLAMP and nxt.args[0] is last:
            self.absorbed.add(nxt)
            last = nxt
            fused.append(_op_name(nxt) or "clamp")
        return last, fused

    def kernels(self) -> list[Kernel]:
        """The graph's kernels in order, each with how far back what it reads was last touched (`far_*`): a clock
        counts the bytes written and the weights read so far, and each node's output is stamped with the clock when
        it was written (a view or a getitem with its source's stamp); a kernel's weights were last read one run
        earlier, the whole program's traffic ago. Kernels measured alone in the sweep read what was made just before
        them, and weights a small program keeps in cache; in a network, GreedyViG's graph conv subtracts tensors made
        several MB of traffic earlier, and a classifier head's 2 MB of weights come from far (MobileViG's: 65 us,
        against 20 predicted from the sweep)."""
        out: list[Kernel] = []
        clock = 0
        made: dict[torch.fx.Node, int] = {}
        weights: list[tuple[Kernel, int]] = []
        for node in self.graph.nodes:
            if node.op != "call_function":
                continue
            if node in self.absorbed:  # written by the unit that folded it, just now
                made[node] = clock
                continue
            op = _op_name(node)
            ks = self.split(node, op) if op is not None and _tensors(_val(node)) else []
            if not ks or all(k.kind == "free" for k in ks):  # a view, a getitem: the data of its source
                src = next((a for a in node.all_input_nodes if not self.is_weight(a)), None)
                made[node] = made.get(src, clock) if src is not None else clock
                out.extend(ks)
                continue
            far = dict.fromkeys(FAR_MB, 0)
            for a in node.all_input_nodes:
                if self.is_weight(a):
                    continue
                age = clock - made.get(a, clock)  # the image and other inputs: as if just made
                nbytes = sum(_nbytes(t) for t in _tensors(_val(a)))
                for mb in FAR_MB:
                    if age > mb << 20:
                        far[mb] += nbytes
            for mb, b in far.items():  # on the unit's first kernel (a new one: `split` made it)
                setattr(ks[0], f"far_{mb}m", b)
            w = self.weight_bytes(node)
            weights.append((ks[0], w))
            clock += sum(k.bytes_written for k in ks) + w
            made[node] = clock
            out.extend(ks)
        for k, w in weights:
            for mb in FAR_MB:
                if clock > mb << 20:
                    setattr(k, f"far_{mb}m", getattr(k, f"far_{mb}m") + w)
        return out

    def split(self, node: torch.fx.Node, op: str) -> list[Kernel]:
        val = _val(node)
        outs = _tensors(val)
        written = sum(_nbytes(t) for t in outs)
        ins = _input_tensors(node)
        base: dict[str, Any] = {"op": op, "module": _module(node), "dtype": str(outs[0].dtype).removeprefix("torch.")}
        if op in _CONV:
            return [self.conv(node, op, base)]
        if op in _LINEAR or (op in ("mm", "addmm") and self.is_weight(node.args[-1 if op == "mm" else 2])):
            return [self.linear(node, op, base)]
        if op in _GEMM:
            return [self.matmul(node, op, base)]
        if op == "scaled_dot_product_attention":
            return self.sdpa(node, base)
        largest = max([int(t.numel()) for t in ins + outs] or [0])
        read = self.activation_bytes(node) + self.weight_bytes(node)
        common = {**base, "elements": largest, "bytes_read": read, "bytes_written": written}
        common.update(self.spatial(ins[0] if ins else outs[0], outs[0]))
        if op in _BN:  # not after a conv or linear: a per-channel affine
            return [Kernel(kind="elementwise", **common)]
        if op in _ELEMENTWISE:
            fused: list[str] = []
            if op in _FUSES_CLAMP:
                _, fused = self.absorb_after(node, bn=False, clamp=True)
            n_out = int(outs[0].numel())
            bcast = any(0 < int(t.numel()) < n_out for t in ins)
            return [Kernel(kind="elementwise", fused=tuple(fused), broadcast=bcast, **common)]
        if op in _ACTIVATION or op in _CLAMP:
            return [Kernel(kind="activation", **common)]
        if op in _NORM:
            return [Kernel(kind="norm", **common)]
        if op in _REDUCE:
            return [Kernel(kind="reduce", **common)]
        if op in _MAYBE_FREE and sum(int(t.numel()) for t in outs) >= sum(int(t.numel()) for t in ins[:1]):
            return [Kernel(kind="free", **common)]
        if op in ("to", "_to_copy", "type_as") and ins and ins[0].dtype == outs[0].dtype:
            return [Kernel(kind="free", **common)]
        if op == "t" and self.is_weight(node.args[0]):
            return [Kernel(kind="free", **common)]
        if op in _LAYOUT:
            return [Kernel(kind="layout", **common)]
        if op in _FREE:
            return [Kernel(kind="free", **common)]
        return [Kernel(kind=op, **common)]

    @staticmethod
    def spatial(x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
        """Channels (dim 1 of NCHW, the last dim of tokens or vectors) and spatial size of an input and output."""
        d: dict[str, int] = {}
        for t, c, hw in ((x, "cin", ("h", "w")), (y, "cout", ("out_h", "out_w"))):
            if t.dim() == 4:
                d[c], d[hw[0]], d[hw[1]] = int(t.shape[1]), int(t.shape[2]), int(t.shape[3])
            elif t.dim() >= 1:
                d[c] = int(t.shape[-1])
        return d

    def conv(self, node: torch.fx.Node, op: str, base: dict) -> Kernel:
        x, w, y = _val(node.args[0]), _val(node.args[1]), _tensors(_val(node))[0]
        transposed = bool(_arg(node, "transposed", 6, False)) or op.startswith("conv_transpose")
        cin, cout = int(x.shape[1]), int(y.shape[1])
        groups = int(_arg(node, "groups", 8 if op in ("convolution", "_convolution") else 6, 1) or 1)
        ksize = [int(s) for s in w.shape[2:]]
        taps = math.prod(ksize)
        # weight: (cout, cin / groups, k...) for a convolution, (cin, cout / groups, k...) for a transposed one
        per_group_in = cin // groups if transposed else int(w.shape[1])
        macs = (int(x.numel()) if transposed else int(y.numel())) * int(w.shape[1]) * taps
        spatial = list(y.shape[2:])
        out_pixels = math.prod(int(s) for s in spatial) if spatial else 1
        if groups > 1 and per_group_in == 1 and groups == cin and not transposed:
            kind, gk = "dwconv", taps
        elif taps == 1 and groups == 1 and not transposed:
            kind, gk = "pwconv", cin
        else:
            kind, gk = "conv", per_group_in * taps
        _, fused = self.absorb_after(node, bn=True, clamp=True)
        shape: dict[str, Any] = {**base, **self.spatial(x, y)}
        return Kernel(
            kind=kind,
            fused=tuple(fused),
            **shape,
            k=max(ksize) if ksize else 1,
            stride=_first(_arg(node, "stride", 3, 1), 1),
            groups=groups,
            gemm_m=out_pixels,
            gemm_n=cout,
            gemm_k=gk,
            batch=1,
            elements=int(y.numel()),
            macs=macs,
            bytes_read=self.activation_bytes(node) + self.weight_bytes(node),
            bytes_written=_nbytes(y),
        )

    def linear(self, node: torch.fx.Node, op: str, base: dict) -> Kernel:
        y = _tensors(_val(node))[0]
        if op == "linear":
            x, w = _val(node.args[0]), _val(node.args[1])
            kdim, n = int(w.shape[1]), int(w.shape[0])
        else:  # mm(x, w^T) / addmm(bias, x, w^T)
            x, w = _val(node.args[-2]), _val(node.args[-1])
            kdim, n = int(w.shape[0]), int(w.shape[1])
        m = int(x.numel()) // max(kdim, 1)
        _, fused = self.absorb_after(node, bn=True, clamp=True)
        return Kernel(
            kind="linear",
            fused=tuple(fused),
            **base,
            cin=kdim,
            cout=n,
            gemm_m=m,
            gemm_n=n,
            gemm_k=kdim,
            batch=1,
            elements=int(y.numel()),
            macs=int(y.numel()) * kdim,
            bytes_read=self.activation_bytes(node) + self.weight_bytes(node),
            bytes_written=_nbytes(y),
        )

    def matmul(self, node: torch.fx.Node, op: str, base: dict) -> Kernel:
        y = _tensors(_val(node))[0]
        a = _val(node.args[1] if op in ("baddbmm",) else node.args[0])
        kdim = int(a.shape[-1])
        m = int(y.shape[-2]) if y.dim() >= 2 else 1
        n = int(y.shape[-1])
        batch = int(y.numel()) // max(m * n, 1)
        return Kernel(
            kind="matmul",
            **base,
            cin=kdim,
            cout=n,
            gemm_m=m,
            gemm_n=n,
            gemm_k=kdim,
            batch=batch,
            elements=int(y.numel()),
            macs=int(y.numel()) * kdim,
            bytes_read=self.activation_bytes(node) + self.weight_bytes(node),
            bytes_written=_nbytes(y),
        )

    @staticmethod
    def sdpa(node: torch.fx.Node, base: dict) -> list[Kernel]:
        """softmax(q k^T) v as the runtime runs it: two matmuls and a softmax."""
        q, k, v = (_val(a) for a in node.args[:3])
        lead = math.prod(int(s) for s in q.shape[:-2])
        L, E, S, Ev = int(q.shape[-2]), int(q.shape[-1]), int(k.shape[-2]), int(v.shape[-1])
        size = q.element_size()
        scores = lead * L * S
        return [
            Kernel(kind="matmul", **{**base, "op": "bmm"}, cin=E, cout=S, gemm_m=L, gemm_n=S, gemm_k=E, batch=lead,
                   elements=scores, macs=scores * E, bytes_read=(_nbytes(q) + _nbytes(k)), bytes_written=scores * size),
            Kernel(kind="activation", **{**base, "op": "softmax"}, cin=S, cout=S, elements=scores,
                   bytes_read=scores * size, bytes_written=scores * size),
            Kernel(kind="matmul", **{**base, "op": "bmm"}, cin=S, cout=Ev, gemm_m=L, gemm_n=Ev, gemm_k=S, batch=lead,
                   elements=lead * L * Ev, macs=lead * L * Ev * S, bytes_read=scores * size + _nbytes(v),
                   bytes_written=lead * L * Ev * size),
        ]  # fmt: skip


@torch.no_grad()
def kernels_of(model: nn.Module, input_size: int, in_chans: int = 3, target: str | None = None) -> list[Kernel]:
    """The kernels one batch-1 forward of `model`'s export form at `input_size` runs, in graph order (see the
    module's docstring for the kinds and what folds into what). With `target`, as that target's runtime runs them
    where it says (`Target.lowering`: ExecuTorch asks XNNPACK's partitioner): the ops it leaves outside the delegate
    are marked `portable` (a view torch.export leaves free that the runtime copies, as ExecuTorch's `alias_copy` or
    `expand_copy`, becomes a `layout` kernel), and each layout copy the delegate inserts is a `layout` kernel of op
    `nchw_nhwc` (XNNPACK's NCHW <-> NHWC transposes where a partition begins or ends, or where an op needs the other
    layout: 0.84 of GhostNet's 2.2 ms here). Where the target cannot say, the export's kernels."""
    ep = export_of(model, input_size, in_chans)
    kernels = _Splitter(ep).kernels()
    return kernels if target is None else as_run_by(kernels, ep, target)


@torch.no_grad()
def export_of(model: nn.Module, input_size: int, in_chans: int = 3) -> torch.export.ExportedProgram:
    """`model`'s export form exported at batch 1 and `input_size` (what `kernels_of` splits): for a caller that wants
    the export's kernels (`kernels_of_program`) and the runtime's (`as_run_by`) from one export."""
    net = prepare_for_export(model)
    return torch.export.export(net, (torch.zeros(1, in_chans, input_size, input_size),))


def as_run_by(kernels: list[Kernel], ep: torch.export.ExportedProgram, target: str) -> list[Kernel]:
    """`kernels` (the kernels of `ep`) as `target`'s runtime runs them (see `kernels_of`); unchanged where the target
    cannot say (no `lowering`, or a network its compiler refuses)."""
    try:
        low = get_target(target).lowering(ep)
    except Exception:  # noqa: BLE001 - a network the runtime's compiler refuses: its kernels as exported
        low = None
    return kernels if low is None else _as_lowered(kernels, low)


def _as_lowered(kernels: list[Kernel], low: Lowering) -> list[Kernel]:
    """`kernels` with the runtime's portable ops marked (each node matched to the export's kernel of its module, op
    and output size, graph order; one without a match is a kernel of its own) and its layout copies added."""
    split = _Splitter(low.program)
    out = list(kernels)
    taken: set[int] = set()
    for node in low.portable:
        op = _op_name(node)
        outs = _tensors(_val(node))
        if op is None or op == "view" or not outs:  # ExecuTorch runs a view_copy as a view (no kernel)
            continue
        module, numel = _module(node), sum(int(t.numel()) for t in outs)
        names = _ALIASES.get(op, {op})
        at = next(
            (
                i
                for i, k in enumerate(out)
                if i not in taken
                and k.module == module
                and (k.op in names or (k.kind == "free" and k.elements == numel))
            ),
            None,
        )
        if at is None:
            made = split.split(node, op)
            out.extend(_portable(k) for k in made)
            taken.update(range(len(out) - len(made), len(out)))
        else:
            out[at] = _portable(out[at], op)
            taken.add(at)
    for node in low.moves:
        t = _tensors(_val(node))[0]
        shape: dict[str, Any] = {"module": _module(node), **_Splitter.spatial(t, t)}
        out.append(
            Kernel(
                kind="layout",
                op="nchw_nhwc",
                dtype=str(t.dtype).removeprefix("torch."),
                elements=int(t.numel()),
                bytes_read=_nbytes(t),
                bytes_written=_nbytes(t),
                **shape,
            )
        )
    return out


def _portable(k: Kernel, op: str | None = None) -> Kernel:
    """`k` run on the runtime's portable kernels: a view it copies (`free` in the export) is a `layout` kernel
    named by the runtime's op (`alias`, `expand`)."""
    if k.kind == "free":
        return replace(k, kind="layout", op=op or k.op, portable=True)
    return replace(k, portable=True)


def kernels_of_program(ep: torch.export.ExportedProgram) -> list[Kernel]:
    """The kernels of an already exported program (its ATen or edge graph)."""
    return _Splitter(ep).kernels()


# -- measured rows joined to kernels -------------------------------------------------------------------------------

# XNNPACK operator (its name before the parenthesis) -> (the kernel kinds it may be running, most likely first; the
# ATen ops it runs, where it names them; whether it may only take a kernel of those ops)
_CONVS = frozenset(_CONV)
_XNN: dict[str, tuple[tuple[str, ...], frozenset[str], bool]] = {
    "Convolution": (("conv", "pwconv", "dwconv"), _CONVS, False),
    "Deconvolution": (("conv",), _CONVS, False),
    "Fully Connected": (("pwconv", "linear", "matmul"), frozenset(), False),  # XNNPACK runs a 1x1 conv as one
    "Batch Matrix Multiply": (("matmul", "linear"), frozenset(), False),
    "Dynamic Fully Connected": (("matmul", "linear"), frozenset(), False),
    "Global Average Pooling": (("reduce",), frozenset({"mean", "adaptive_avg_pool2d", "avg_pool2d"}), False),
    "Average Pooling": (("reduce",), frozenset({"avg_pool2d", "adaptive_avg_pool2d"}), False),
    "Max Pooling": (("reduce",), frozenset({"max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool2d"}), False),
    "Argmax Pooling": (("reduce",), frozenset({"max_pool2d", "max_pool2d_with_indices"}), False),
    "Mean": (("reduce",), frozenset({"mean", "adaptive_avg_pool2d"}), False),
    "Sum": (("reduce",), frozenset({"sum"}), False),
    "Softmax": (("activation",), frozenset({"softmax", "_softmax"}), False),
    "Clamp": (("activation",), frozenset(_CLAMP), False),
    # the layout moves XNNPACK inserts (NCHW <-> NHWC) have no kernel here: these take only a kernel of their ops
    "Transpose": (("layout",), frozenset({"permute", "transpose", "t", "movedim", "swapaxes", "nchw_nhwc"}), True),
    "Concatenate": (("layout",), frozenset({"cat", "concat", "stack"}), True),
    "Copy": (("layout",), frozenset({"cat", "concat", "stack", "repeat", "tile", "split", "chunk", "unbind"}), True),
    "Slice": (("layout",), frozenset({"slice", "select", "narrow", "split", "chunk", "unbind"}), True),
    "Even Split": (("layout",), frozenset({"split", "split_with_sizes", "chunk", "unbind"}), True),
    "Constant Pad": (("layout",), frozenset({"constant_pad_nd", "pad"}), True),
    "Convert": (("layout",), frozenset({"to", "_to_copy", "type_as"}), True),
    "Static Reshape": (("layout",), frozenset(), True),  # a view: `free` here
    "Depth To Space": (("layout",), frozenset({"pixel_shuffle"}), True),
    "Space To Depth": (("layout",), frozenset({"pixel_unshuffle"}), True),
}
_XNN_OPS = {
    "Add": "add", "Subtract": "sub rsub", "Multiply": "mul", "Divide": "div", "Maximum": "maximum",
    "Minimum": "minimum", "Square": "pow square", "Squared Difference": "sub", "Negate": "neg",
    "Abs": "abs", "Absolute Value": "abs", "Floor": "floor", "Ceiling": "ceil", "Bankers Rounding": "round",
    "Copysign": "copysign",
    "HardSwish": "hardswish", "Sigmoid": "sigmoid", "Tanh": "tanh", "GELU": "gelu", "ELU": "elu",
    "Leaky ReLU": "leaky_relu", "Exp": "exp", "Log": "log", "Square Root": "sqrt std",
    "Reciprocal Square Root": "rsqrt", "Sine": "sin", "Cosine": "cos", "PReLU": "prelu",
}  # fmt: skip
# a portable operator's name -> the ops of this graph it may be computing (the edge dialect decomposes some)
_ALIASES = {
    "_to_dim_order": {"to", "_to_copy", "type_as"},
    "var": {"var", "std"},
    "sqrt": {"sqrt", "std"},
    "_softmax": {"softmax", "_softmax"},
    "_log_softmax": {"log_softmax", "_log_softmax"},
    "native_layer_norm": _NORM,
    "native_group_norm": _NORM,
    "_native_batch_norm_legit_no_training": _BN,
    "convolution": _CONV,
    "addmm": {"addmm", "linear", "mm"},
    "mm": {"mm", "linear", "matmul"},
    "bmm": {"bmm", "matmul"},
    "permute": {"permute", "transpose", "t"},
    "_adaptive_avg_pool2d": {"adaptive_avg_pool2d", "mean"},
    "mean": {"mean", "adaptive_avg_pool2d"},
}


PORTABLE_ROW = "native_call_"  # how ExecuTorch's profiler names an operator run on its portable kernels
# a TFLite builtin LiteRT runs outside XNNPACK (its per-op rows name it so) -> the ATen ops it may be computing; any
# other builtin by its name in lower case (`MEAN` a `mean`)
_TFL_ROWS = {
    "LESS": "lt", "LESS_EQUAL": "le", "GREATER": "gt", "GREATER_EQUAL": "ge", "EQUAL": "eq", "NOT_EQUAL": "ne",
    "CAST": "to _to_copy type_as", "SELECT": "where", "SELECT_V2": "where", "STRIDED_SLICE": "slice select narrow",
    "GATHER": "index_select index gather", "GATHER_ND": "index", "REDUCE_MAX": "amax max", "PAD": "constant_pad_nd pad",
    "PADV2": "constant_pad_nd pad", "CONCATENATION": "cat concat stack", "TRANSPOSE": "permute transpose",
    "BATCH_MATMUL": "bmm matmul", "FULLY_CONNECTED": "linear", "CONV_2D": "conv2d", "DEPTHWISE_CONV_2D": "conv2d",
    "LOGISTIC": "sigmoid", "HARD_SWISH": "hardswish", "SQUARED_DIFFERENCE": "sub", "SQRT": "sqrt std",
    "SPLIT": "split split_with_sizes chunk", "SPLIT_V": "split split_with_sizes chunk", "CUMSUM": "cumsum",
}  # fmt: skip


def _portable_name(op: str) -> str:
    name = op.removeprefix("native_call_").removeprefix("aten::").removeprefix("aten.").split(".")[0]
    name = name.split("(")[0].strip().rstrip("_")
    if name.endswith("_copy") and name != "_to_copy":
        name = name[: -len("_copy")]
    return name


def _classify(name: str) -> tuple[str, ...]:
    if name in _CONV:
        return ("conv", "pwconv", "dwconv")
    if name in _LINEAR or name in ("mm", "addmm"):
        return ("linear", "pwconv", "matmul")
    if name in _GEMM:
        return ("matmul", "linear")
    for kind, names in (
        ("elementwise", _ELEMENTWISE | _BN),
        ("activation", _ACTIVATION | _CLAMP),
        ("norm", _NORM),
        ("reduce", _REDUCE),
        ("layout", _LAYOUT | {"_to_dim_order"}),
        ("free", _FREE),
    ):
        if name in names:
            return (kind,)
    return (name,)


def row_match(op: str) -> tuple[tuple[str, ...], frozenset[str], bool]:
    """What a per-op row's operator may be: (kernel kinds, most likely first; the ATen ops it runs, empty where it
    does not say; whether it may take only a kernel of those ops). The operator is XNNPACK's
    (`Convolution (NHWC, F32) DWConv`) or a portable one's (`native_call_add.out`, `aten::add`, `add.out`)."""
    head, _, rest = op.partition(" (")
    variant = rest.rpartition(")")[2].strip()
    if head == "Convolution":
        if variant == "DWConv":
            return ("dwconv", "conv"), _CONVS, False
        if variant == "VMulCAddC":  # a batch norm on its own, as XNNPACK's 1x1 depthwise conv
            return ("elementwise", "dwconv"), frozenset(_BN | _CONV), False
        if variant == "GEMM":
            return ("pwconv", "conv"), _CONVS, False
    if head in _XNN:
        return _XNN[head]
    if head in _XNN_OPS:
        names = _XNN_OPS[head].split()
        kinds = tuple(dict.fromkeys(k for n in names for k in _classify(n)))
        return kinds, frozenset(names), False
    if op.isupper() and " " not in op:  # a TFLite builtin (LiteRT's rows)
        names = _TFL_ROWS.get(op, op.lower()).split()
        kinds = tuple(dict.fromkeys(k for n in names for k in _classify(n)))
        return tuple("layout" if k == "free" else k for k in kinds), frozenset(names), False
    name = _portable_name(op)
    kinds = _classify(name)
    # a portable operator copies: a view of the export that ExecuTorch runs as `alias_copy` or `expand_copy` is a
    # `layout` kernel once `kernels_of(..., target=)` has marked it
    return ("layout",) if kinds == ("free",) else kinds, frozenset(_ALIASES.get(name, set()) | {name}), False


def row_kinds(op: str) -> tuple[str, ...]:
    """The kernel kinds a per-op row's operator may be, most likely first (see `row_match`)."""
    return row_match(op)[0]


@dataclass
class KernelTimes:
    """Measured time per kernel (`ms[i]` for `kernels[i]`; None where no row was matched to it)."""

    kernels: list[Kernel]
    ms: list[float | None]
    shared: list[bool]  # the time is a share of a row that covered several kernels of one kind in one module
    unmatched: list[dict]  # rows (or the part of one) no kernel took: runtime-inserted moves, rows without a module

    @property
    def matched_ms(self) -> float:
        return sum(m for m in self.ms if m is not None)

    @property
    def unmatched_ms(self) -> float:
        return sum(float(r["ms"]) for r in self.unmatched)

    def samples(self, include_shared: bool = False) -> list[tuple[Kernel, float]]:
        """(kernel, ms) of every timed kernel that is not free; shared ones only where asked."""
        return [
            (k, m)
            for k, m, s in zip(self.kernels, self.ms, self.shared)
            if m is not None and k.kind != "free" and (include_shared or not s)
        ]


def _weight(k: Kernel) -> float:
    """What a row's time is split by among kernels it covers: MACs for compute kinds, bytes for the others."""
    return float(k.macs if k.kind in COMPUTE_KINDS else k.bytes_read + k.bytes_written) or 1.0


def kernels_from_rows(kernels: list[Kernel], rows: list[dict]) -> KernelTimes:
    """Join per-op rows (`{op, module, count, ms}`, as `executorch_op_profile` gives them: one per (operator,
    module), times summed) to `kernels`, by module, kind and op.

    In each module, a row takes `count` kernels, graph order: first those of its kinds whose ATen op it runs (an
    XNNPACK `Subtract` a `sub`, `Copy` a `cat`, a portable `var` a `std`), then, for what it still counts, any of
    its kinds, most likely kind first (`row_match`: an XNNPACK `Fully Connected` is a 1x1 conv, a linear or a
    matmul; a `Convolution ... DWConv` a depthwise conv). Each kernel's time is a share of the row's in proportion to
    its MACs (compute kinds) or bytes; where a row found several kernels they are flagged `shared` (the row's total
    is right, the split between them is a model). A row left over goes to its module's `norm` kernel where there is
    one and the row is a piece of a decomposed norm (reduce, elementwise, activation).

    What cannot be matched, and goes to `unmatched` (the network's overhead, not any kernel's):
    - rows without a module (a program compiled without its ETRecord) and rows of a module that has no kernel here
      (the runtime's graph split differently from `torch.export`'s);
    - the layout moves the runtime inserts (XNNPACK's NCHW <-> NHWC `Transpose`, `Convert`, the `Static Reshape` of
      a view that is `free` here): a layout row takes only a kernel of the op it runs, except in a module that holds
      a matmul, whose leftover layout rows go to its matmuls (the operand copies of a batched matmul the runtime
      lowers to expand, reshape and bmm). Where the kernels are ExecuTorch's (`kernels_of(..., target=
      "executorch")`), the `Transpose` rows left over go to its `nchw_nhwc` kernels instead, wherever they are;
    - pieces of an op the runtime decomposed that no kernel of that op stands for (the `sqrt` of a `std` is
      matched, a lone `Square Root` elsewhere is not), and the part of a row counting more kernels than its module
      has of its kind.
    Kernels the runtime folded away (a clamp fused into an add here too, a `free` view) or that no row names keep
    `ms` None. A kernel a portable operator's row took (`native_call_...`) comes back marked `portable`.
    """
    kernels = list(kernels)
    by_module: dict[str | None, list[int]] = defaultdict(list)
    for i, k in enumerate(kernels):
        if k.kind != "free":
            by_module[k.module].append(i)
    ms: list[float | None] = [None] * len(kernels)
    shared = [False] * len(kernels)
    taken: set[int] = set()
    unmatched: list[dict] = []

    def add(i: int, t: float, is_shared: bool) -> None:
        ms[i] = (ms[i] or 0.0) + t
        shared[i] = shared[i] or is_shared

    def split(among: list[int], t: float) -> None:
        """`t` shared among kernels in proportion to their MACs (compute kinds) or bytes."""
        weights = [_weight(kernels[i]) for i in among]
        for i, wt in zip(among, weights):
            add(i, t * wt / sum(weights), len(among) > 1)

    Pending = tuple[dict, tuple[str, ...], frozenset[str], bool, list[int]]  # row, kinds, ops, strict, kernels found
    pending: list[Pending] = []
    for row in rows:
        kinds, ops, strict = row_match(str(row["op"]))
        module = row.get("module")
        if module is None or module not in by_module:
            unmatched.append(row)
            continue
        pending.append((row, kinds, ops, strict, []))
    # the rows that name their op first, so that a `Subtract` row is not taken by an `Abs` kernel
    for row, kinds, ops, _strict, found in pending:
        count = max(int(row.get("count") or 1), 1)
        for kind in kinds:
            for i in by_module[row["module"]]:
                if len(found) < count and i not in taken and kernels[i].kind == kind and kernels[i].op in ops:
                    found.append(i)
                    taken.add(i)
    for row, kinds, _ops, strict, found in pending:
        count = max(int(row.get("count") or 1), 1)
        if strict:
            continue
        for kind in kinds:
            for i in by_module[row["module"]]:
                if len(found) < count and i not in taken and kernels[i].kind == kind:
                    found.append(i)
                    taken.add(i)
    for row, kinds, _ops, strict, found in pending:
        count = max(int(row.get("count") or 1), 1)
        t = float(row.get("ms") or 0.0)
        if not found:  # a piece of an op the runtime decomposed (a `std`'s sqrt, a layer norm's mean)
            members = by_module[row["module"]]
            whole = [i for i in members if kernels[i].op in _ops and kernels[i].kind in kinds and not strict]
            whole = whole or [
                i for i in members if kernels[i].kind == "norm" and {"reduce", "elementwise", "activation"} & set(kinds)
            ]
            # LiteRT pads a max pool's input with -inf outside XNNPACK (ShuffleNetV2's stem pool: 0.13 ms of PADV2)
            whole = whole or [i for i in members if kernels[i].kind == "reduce" and "pad" in _ops]
            # the copies a runtime makes around a batched matmul (ExecuTorch lowers a 4-D `matmul` to expand_copy,
            # a Static Reshape to 3-D, bmm and back: at 3136 tokens the copies took 15 of the 37 ms of an attention
            # network here) belong to the matmuls of their module: what a matmul costs on that runtime
            gemms = [i for i in members if kernels[i].kind == "matmul"] if set(kinds) <= {"layout", "free"} else []
            if whole:
                add(whole[0], t, False)
            elif gemms:
                split(gemms, t)
            else:
                unmatched.append(row)
            continue
        covered = t * len(found) / count  # a row counting more kernels than there are: the rest is unmatched
        split(found, covered)
        if str(row["op"]).startswith(PORTABLE_ROW):  # ran on ExecuTorch's portable kernels, whatever the export said
            for i in found:
                kernels[i] = replace(kernels[i], portable=True)
        if len(found) < count:
            unmatched.append({**row, "count": count - len(found), "ms": t - covered})
    # XNNPACK's inserted transposes are named by the module of the kernel they run before, `kernels_of`'s
    # `nchw_nhwc` copies by the module whose output they copy: those left over meet here, their time split by bytes
    moves = [i for i, k in enumerate(kernels) if k.op == "nchw_nhwc" and i not in taken and ms[i] is None]
    left = [r for r in unmatched if str(r["op"]).startswith("Transpose")]
    if moves and left:
        split(moves, sum(float(r.get("ms") or 0.0) for r in left))
        unmatched = [r for r in unmatched if not str(r["op"]).startswith("Transpose")]
    return KernelTimes(kernels, ms, shared, unmatched)
