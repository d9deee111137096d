"""Channel dependency analysis: the groups of coupled channels of any network `torch.export` can trace.

Every tensor's channel dimension is described by a list of segments, each a *channel space* with a
length. Operators either create a space (a convolution's or linear layer's output channels), carry
spaces through (BatchNorm, activations, depthwise convolutions, spatial slicing and concatenation,
pooling), join spaces (residual adds, products, maxima: the operands must prune alike), or stack them
(concatenation along channels). Spaces joined together form one group: OTO's zero-invariant group.

A group records every tensor slice that belongs to it: the producers' output rows (weights, biases),
what follows them channel by channel (BatchNorm affine and statistics, layer scales, depthwise
kernels) and the consumers' input columns. Zeroing a group's producer and pass-through slices makes
its channels exactly zero everywhere, so removing them gives exactly the same output; `apply_plan`
does the removal. A group whose zero would not stay zero (a sigmoid or a constant added on the way
to a consumer), or that reaches the network's input or output, is not offered for pruning.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import EdgekitError, first_line
from ..models.probe import check_input_size


class PruneGraphError(EdgekitError):
    """The channel analysis met an operator or a layout it cannot handle."""


@dataclass
class Seg:
    space: int
    length: int
    tainted: bool = False  # may be non-zero after the space's group is zeroed


@dataclass
class Desc:
    """The channel layout of one tensor: `segs` along `cdim`; `segs is None` for channel-less tensors."""

    cdim: int | None
    segs: list[Seg] | None
    ndim: int

    @property
    def channels(self) -> int:
        return sum(s.length for s in self.segs) if self.segs else 0


@dataclass
class ParamRef:
    """A parameter or buffer (or a view of one that only adds or drops singleton dims)."""

    fqn: str
    shape: tuple[int, ...]
    dims: list[int | None]  # for each dim of the view, the parameter dim it is (None: inserted)


@dataclass
class Entry:
    fqn: str
    dim: int
    offset: int
    role: str  # "out" (producer), "pass" (follows channel by channel), "in" (consumer)


@dataclass
class Group:
    id: int
    size: int
    entries: list[Entry] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "size": self.size,
            "entries": [[e.fqn, e.dim, e.offset, e.role] for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Group:
        return cls(int(d["id"]), int(d["size"]), [Entry(str(a), int(b), int(c), str(r)) for a, b, c, r in d["entries"]])


# Operators that carry every channel through unchanged and keep zeros at zero.
_ZERO_KEEPING_UNARY = {
    "relu",
    "relu_",
    "gelu",
    "hardswish",
    "hardswish_",
    "hardtanh",
    "hardtanh_",
    "silu",
    "silu_",
    "leaky_relu",
    "relu6",
    "elu",
    "tanh",
    "abs",
    "neg",
    "dropout",
    "clone",
    "contiguous",
    "alias",
    "detach",
    "to",
    "_to_copy",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "max_pool2d",
    "upsample_nearest2d",
    "upsample_bilinear2d",
    "pad",
    "constant_pad_nd",
    "mish",
    "softplus_zero",
}
# Operators that carry channels through but turn a zero into something else.
_ZERO_BREAKING_UNARY = {"sigmoid", "hardsigmoid", "exp", "cos", "softplus", "reciprocal", "rsqrt", "log"}
_IGNORED = {"_assert_tensor_metadata", "_assert_scalar", "sym_size", "sym_constrain_range_for_size"}


def _name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class ChannelGraph:
    """Runs the analysis over one exported graph; `groups` is the result."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.ep = torch.export.export(model, (example,))
        except Exception as e:  # noqa: BLE001 - the user's network does not trace
            raise PruneGraphError(
                f"torch.export cannot trace this network ({type(e).__name__}: {first_line(e)}); "
                "channel analysis needs a traceable forward"
            ) from None
        finally:
            model.train(was_training)
        self.uf = _UnionFind()
        self.lengths: list[int] = []
        self.entries: dict[int, list[Entry]] = {}
        self.fixed: set[int] = set()
        self.unsafe: set[int] = set()
        self.info: dict[torch.fx.Node, object] = {}
        sig = self.ep.graph_signature
        self.params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        self.params.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}))
        self.state = {**dict(self.ep.named_parameters()), **dict(self.ep.named_buffers()), **self.ep.constants}
        self._run()

    # -- spaces ---------------------------------------------------------------------------------
    def _space(self, length: int) -> int:
        s = self.uf.new()
        self.lengths.append(length)
        self.entries[s] = []
        return s

    def _add(self, seg_list: list[Seg], fqn: str, dim: int, role: str) -> None:
        offset = 0
        for s in seg_list:
            self.entries[s.space].append(Entry(fqn, dim, offset, role))
            offset += s.length

    def _unify(self, a: list[Seg], b: list[Seg], op: str) -> None:
        if [s.length for s in a] != [s.length for s in b]:
            raise PruneGraphError(
                f"channel analysis cannot handle operator '{op}': it joins tensors whose channels are laid out "
                f"differently ({[s.length for s in a]} vs {[s.length for s in b]})"
            )
        for x, y in zip(a, b):
            self.uf.union(x.space, y.space)

    # -- node handlers --------------------------------------------------------------------------
    def _run(self) -> None:
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                self.info[node] = self._placeholder(node)
            elif node.op == "call_function":
                name = _name(node.target)
                if name in _IGNORED:
                    continue
                handler = getattr(self, f"_op_{name}", None)
                if handler is not None:
                    self.info[node] = handler(node, name)
                elif name in _ZERO_KEEPING_UNARY:
                    self.info[node] = self._unary(node, taint=False)
                elif name in _ZERO_BREAKING_UNARY:
                    self.info[node] = self._unary(node, taint=True)
                else:
                    raise PruneGraphError(
                        f"channel analysis cannot handle operator '{node.target}' (in {node.name}); "
                        "prune a network without it, or use unstructured pruning"
                    )
            elif node.op == "output":
                for arg in _flat(node.args):
                    d = self.info.get(arg)
                    if isinstance(d, Desc) and d.segs:
                        for s in d.segs:
                            self.fixed.add(s.space)

    def _placeholder(self, node):
        if node.name in self.params:
            fqn = self.params[node.name]
            shape = tuple(self.state[fqn].shape)
            return ParamRef(fqn, shape, list(range(len(shape))))
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dim() >= 2:
            s = self._space(int(val.shape[1]))
            self.fixed.add(s)  # the network's input channels (RGB) stay
            return Desc(1, [Seg(s, int(val.shape[1]))], val.dim())
        return None

    def _desc(self, arg, op: str):
        d = self.info.get(arg) if isinstance(arg, torch.fx.Node) else None
        return d

    def _unary(self, node, taint: bool):
        d = self._desc(node.args[0], str(node.target))
        if isinstance(d, ParamRef) or d is None:
            return d
        return self._with(d, taint=taint, ndim=_ndim(node, d.ndim))

    @staticmethod
    def _with(d: Desc, taint: bool | None = None, ndim: int | None = None, cdim=...) -> Desc:
        segs = None if d.segs is None else [Seg(s.space, s.length, s.tainted or bool(taint)) for s in d.segs]
        return Desc(d.cdim if cdim is ... else cdim, segs, d.ndim if ndim is None else ndim)

    def _consume(self, d: Desc, fqn: str, dim: int) -> None:
        assert d.segs is not None  # callers pass tensors with channels
        self._add(d.segs, fqn, dim, "in")
        for s in d.segs:
            if s.tainted:
                self.unsafe.add(s.space)

    def _op_conv2d(self, node, op):
        x, w = node.args[0], node.args[1]
        b = node.args[2] if len(node.args) > 2 else None
        groups = int(node.args[6]) if len(node.args) > 6 else 1
        dx, pw = self._desc(x, op), self.info.get(w)
        if not isinstance(pw, ParamRef) or not isinstance(dx, Desc) or dx.segs is None:
            raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' with a computed weight")
        c_out, c_in_g = pw.shape[0], pw.shape[1]
        pb = self.info.get(b) if b is not None else None
        if groups == 1:
            self._consume(dx, pw.fqn, 1)
            s = self._space(c_out)
            self.entries[s].append(Entry(pw.fqn, 0, 0, "out"))
            if isinstance(pb, ParamRef):
                self.entries[s].append(Entry(pb.fqn, 0, 0, "out"))
            return Desc(1, [Seg(s, c_out)], 4)
        if groups == dx.channels == c_out and c_in_g == 1:  # depthwise: channel j in, channel j out
            self._add(dx.segs, pw.fqn, 0, "pass")
            if isinstance(pb, ParamRef):
                self._add(dx.segs, pb.fqn, 0, "pass")  # zeroed with the group: zeros stay zeros
            return self._with(dx)
        raise PruneGraphError(
            f"channel analysis cannot handle operator '{node.target}' with groups={groups} "
            "(only dense and depthwise convolutions)"
        )

    def _op_linear(self, node, op):
        x, w = node.args[0], node.args[1]
        b = node.args[2] if len(node.args) > 2 else None
        dx, pw = self._desc(x, op), self.info.get(w)
        if not isinstance(pw, ParamRef) or not isinstance(dx, Desc) or dx.segs is None or dx.cdim != dx.ndim - 1:
            raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' on this input layout")
        self._consume(dx, pw.fqn, 1)
        s = self._space(pw.shape[0])
        self.entries[s].append(Entry(pw.fqn, 0, 0, "out"))
        pb = self.info.get(b) if b is not None else None
        if isinstance(pb, ParamRef):
            self.entries[s].append(Entry(pb.fqn, 0, 0, "out"))
        return Desc(dx.ndim - 1, [Seg(s, pw.shape[0])], dx.ndim)

    def _op_batch_norm(self, node, op):
        dx = self._desc(node.args[0], op)
        for arg in node.args[1:5]:
            p = self.info.get(arg) if isinstance(arg, torch.fx.Node) else None
            if isinstance(p, ParamRef):
                self._add(dx.segs, p.fqn, 0, "pass")
        return self._with(dx)  # affine weight and bias are zeroed with the group: zeros stay zeros

    _op__native_batch_norm_legit_no_training = _op_batch_norm

    def _op_getitem(self, node, op):
        d = self.info.get(node.args[0])
        return d if node.args[1] == 0 else None

    def _binary(self, node, op, mode: str):
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else None
        da = self.info.get(a) if isinstance(a, torch.fx.Node) else None
        db = self.info.get(b) if isinstance(b, torch.fx.Node) else None
        ndim = _ndim(node, 4)
        if isinstance(da, ParamRef) and isinstance(db, Desc):
            da, db = db, da
        if isinstance(da, Desc) and isinstance(db, ParamRef):
            return self._with_param(node, da, db, mode, ndim)
        if isinstance(da, ParamRef) and isinstance(db, ParamRef):
            raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' between two parameters")
        if isinstance(da, Desc) and isinstance(db, Desc):
            if da.segs and db.segs:
                self._unify(da.segs, db.segs, str(node.target))
                segs = [
                    Seg(x.space, x.length, (x.tainted and y.tainted) if mode == "mul" else (x.tainted or y.tainted))
                    for x, y in zip(da.segs, db.segs)
                ]
                return Desc(da.cdim, segs, ndim)
            full = da if da.segs else db
            other = db if da.segs else da
            if full.segs is None:
                return Desc(None, None, ndim)
            # a channel-less (broadcast) operand: a product keeps zeros, a sum does not
            return self._with(full, taint=(mode != "mul"), ndim=ndim) if other is not None else full
        d = da if isinstance(da, Desc) else db
        if isinstance(d, Desc):  # a Python scalar operand
            return self._with(d, taint=(mode != "mul"), ndim=ndim)
        return da

    def _with_param(self, node, d: Desc, p: ParamRef, mode: str, ndim: int) -> Desc:
        """x (op) parameter: a per-channel parameter follows x's channels (layer scale); a scalar does not."""
        if d.segs is None:
            return d
        assert d.cdim is not None  # a tensor with channels has a channel dim
        view_dim = d.cdim - (ndim - len(p.dims))
        pdim = p.dims[view_dim] if 0 <= view_dim < len(p.dims) else None
        if pdim is not None and p.shape[pdim] == d.channels and d.channels > 1:
            self._add(d.segs, p.fqn, pdim, "pass")  # a per-channel parameter (layer scale, bias): zeroed too
            return self._with(d, ndim=ndim)
        return self._with(d, taint=(mode != "mul"), ndim=ndim)  # a scalar: x + c is not zero

    def _op_add(self, node, op):
        return self._binary(node, op, "add")

    # joins of two operands that may be non-zero where either is (comparisons make masks of 1s)
    _op_sub = _op_maximum = _op_minimum = _op_lt = _op_gt = _op_le = _op_ge = _op_add

    def _op_mul(self, node, op):
        return self._binary(node, op, "mul")

    def _op_div(self, node, op):
        # x / y keeps the zeros of x when y has no channels (a scalar, a broadcast statistic)
        den = self.info.get(node.args[1]) if isinstance(node.args[1], torch.fx.Node) else None
        if isinstance(den, Desc) and den.segs:
            raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' by a channel tensor")
        return self._binary(node, op, "mul")

    def _op_zeros_like(self, node, op):
        d = self.info.get(node.args[0])
        return self._with(d, taint=False) if isinstance(d, Desc) else d

    def _op_cat(self, node, op):
        tensors, dim = node.args[0], (node.args[1] if len(node.args) > 1 else 0)
        found = [self.info.get(t) for t in tensors]
        descs = [d for d in found if isinstance(d, Desc)]
        if len(descs) != len(found):
            raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' on parameters")
        ndim = descs[0].ndim
        dim = dim % ndim
        if descs[0].segs is not None and dim == descs[0].cdim:
            if any(d.segs is None for d in descs):
                raise PruneGraphError(
                    f"channel analysis cannot handle operator '{node.target}' joining a tensor without channels "
                    "along the channel dimension"
                )
            segs = [Seg(s.space, s.length, s.tainted) for d in descs for s in d.segs or ()]
            return Desc(dim, segs, ndim)
        first = descs[0]
        for d in descs[1:]:
            if first.segs and d.segs:
                self._unify(first.segs, d.segs, str(node.target))
        taint = any(s.tainted for d in descs if d.segs for s in d.segs)
        return self._with(first, taint=taint)

    def _op_slice(self, node, op):
        d = self.info.get(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else 0
        if isinstance(d, Desc) and d.segs is not None and dim % d.ndim == d.cdim:
            val = node.meta.get("val")
            if val is not None and int(val.shape[d.cdim]) != d.channels:
                raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' along channels")
        return d

    def _reduce(self, node, op, keep_zero: bool):
        d = self.info.get(node.args[0])
        if not isinstance(d, Desc) or d.segs is None:
            return d
        assert d.cdim is not None  # a tensor with channels has a channel dim
        dims = node.args[1] if len(node.args) > 1 else None
        keepdim = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim", False))
        dims = (
            list(range(d.ndim))
            if dims is None
            else [x % d.ndim for x in (dims if isinstance(dims, (list, tuple)) else [dims])]
        )
        if d.cdim in dims:
            if not keep_zero:
                raise PruneGraphError(
                    f"channel analysis cannot handle operator '{node.target}' over the channel dimension "
                    "(its value depends on how many channels there are)"
                )
            return Desc(None, None, d.ndim if keepdim else d.ndim - len(dims))  # a sum over channels: zeros add nothing
        cdim = d.cdim if keepdim else d.cdim - sum(1 for x in dims if x < d.cdim)
        return self._with(d, ndim=d.ndim if keepdim else d.ndim - len(dims), cdim=cdim)

    def _op_sum(self, node, op):
        return self._reduce(node, op, keep_zero=True)

    def _op_mean(self, node, op):
        return self._reduce(node, op, keep_zero=False)

    def _op_std(self, node, op):
        return self._reduce(node, op, keep_zero=False)

    _op_var = _op_std
    _op_amax = _op_sum

    def _op_flatten(self, node, op):
        d = self.info.get(node.args[0])
        start = node.args[1] if len(node.args) > 1 else 0
        end = node.args[2] if len(node.args) > 2 else -1
        val_in = node.args[0].meta.get("val")
        if not isinstance(d, Desc) or d.segs is None:
            return d
        assert d.cdim is not None  # a tensor with channels has a channel dim
        end = end % d.ndim
        if start <= d.cdim <= end:
            rest = [int(val_in.shape[i]) for i in range(start, end + 1) if i != d.cdim]
            if any(r != 1 for r in rest) or d.cdim != start:
                raise PruneGraphError(
                    f"channel analysis cannot handle operator '{node.target}': it mixes channels with other dims"
                )
        ndim = d.ndim - (end - start)
        cdim = d.cdim if d.cdim < start else (start if d.cdim <= end else d.cdim - (end - start))
        return self._with(d, ndim=ndim, cdim=cdim)

    def _op_unsqueeze(self, node, op):
        d = self.info.get(node.args[0])
        dim = node.args[1]
        if isinstance(d, ParamRef):
            dims = list(d.dims)
            dim = dim % (len(dims) + 1)
            dims.insert(dim, None)
            return ParamRef(d.fqn, d.shape, dims)
        if isinstance(d, Desc):
            dim = dim % (d.ndim + 1)
            cdim = d.cdim + 1 if d.cdim is not None and dim <= d.cdim else d.cdim
            return self._with(d, ndim=d.ndim + 1, cdim=cdim)
        return d

    def _op_squeeze(self, node, op):
        d = self.info.get(node.args[0])
        val = node.meta.get("val")
        if isinstance(d, Desc) and d.segs is not None and val is not None and val.dim() < d.ndim:
            assert d.cdim is not None  # a tensor with channels has a channel dim
            val_in = node.args[0].meta["val"]
            removed = [i for i in range(val_in.dim()) if val_in.shape[i] == 1 and i != d.cdim]
            dims = node.args[1] if len(node.args) > 1 else removed
            dims = [x % val_in.dim() for x in (dims if isinstance(dims, (list, tuple)) else [dims])]
            dims = [x for x in dims if val_in.shape[x] == 1]
            if d.cdim in dims:
                raise PruneGraphError(f"channel analysis cannot handle operator '{node.target}' on a single channel")
            return self._with(d, ndim=val.dim(), cdim=d.cdim - sum(1 for x in dims if x < d.cdim))
        return d

    def _op_view(self, node, op):
        d = self.info.get(node.args[0])
        val_in = node.args[0].meta.get("val")
        val = node.meta.get("val")
        if isinstance(d, Desc) and d.segs is not None and val_in is not None and val is not None:
            shape_in = [int(s) for s in val_in.shape]
            shape = [int(s) for s in val.shape]
            if [s for s in shape_in if s != 1] == [s for s in shape if s != 1]:
                # only singleton dims come or go: follow the channel dim
                before = sum(1 for s in shape_in[: d.cdim] if s != 1)
                idx = [i for i, s in enumerate(shape) if s != 1]
                cdim = idx[before] if before < len(idx) else None
                if cdim is not None and shape[cdim] == d.channels:
                    return self._with(d, ndim=len(shape), cdim=cdim)
            raise PruneGraphError(
                f"channel analysis cannot handle operator '{node.target}' from {shape_in} to {shape}: "
                "it reshapes the channel dimension"
            )
        if isinstance(d, ParamRef) and val is not None:
            shape = [int(s) for s in val.shape]
            src = [i for i, s in enumerate(d.shape) if s != 1]
            dst = [i for i, s in enumerate(shape) if s != 1]
            if [d.shape[i] for i in src] == [shape[i] for i in dst]:
                dims: list[int | None] = [None] * len(shape)
                for i, j in zip(src, dst):
                    dims[j] = d.dims[i] if i < len(d.dims) else None
                return ParamRef(d.fqn, d.shape, dims)
        return d

    _op_reshape = _op_view
    _op__unsafe_view = _op_view

    # -- result ---------------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        classes: dict[int, list[int]] = {}
        for s in range(len(self.lengths)):
            classes.setdefault(self.uf.find(s), []).append(s)
        out: list[Group] = []
        for _root, members in sorted(classes.items()):
            if any(m in self.fixed or m in self.unsafe for m in members):
                continue
            entries = [e for m in members for e in self.entries[m]]
            if not any(e.role == "out" for e in entries):
                continue
            sizes = {self.lengths[m] for m in members}
            if len(sizes) != 1:
                raise PruneGraphError(f"channel spaces of different sizes were joined: {sorted(sizes)}")
            seen, unique = set(), []
            for e in entries:
                key = (e.fqn, e.dim, e.offset)
                if key not in seen:
                    seen.add(key)
                    unique.append(e)
            out.append(Group(len(out), sizes.pop(), unique))
        return out


def _flat(args):
    out = []
    for a in args if isinstance(args, (list, tuple)) else [args]:
        if isinstance(a, (list, tuple)):
            out += _flat(a)
        elif isinstance(a, dict):
            out += _flat(list(a.values()))
        else:
            out.append(a)
    return out


def _ndim(node, default: int) -> int:
    val = node.meta.get("val")
    return val.dim() if isinstance(val, torch.Tensor) else default


def channel_groups(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> list[Group]:
    """The prunable groups of coupled channels of `model` (traced at batch 1, `input_size`²).

    A network that does not run at `input_size` is an `InputSizeError` first, not an error from inside the trace.
    """
    check_input_size(model, input_size, in_chans=in_chans)
    return ChannelGraph(model, torch.zeros(1, in_chans, input_size, input_size)).groups()
