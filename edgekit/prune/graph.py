"""Channel dependency analysis: the groups of coupled channels of any network `torch.export` can trace.

The network is exported and functionalized (in-place ops such as `out += identity` or `relu_` become their
functional forms), then interpreted node by node on real inputs with a *label* beside every tensor: an integer
tensor of the same shape that says, element by element, which channel it belongs to (`-1`: none). Every
producer (a convolution's or linear layer's output) draws fresh channel ids; every op that only moves data
(`view`, `reshape`, `permute`, `transpose`, `flatten`, `cat`, `split`, `chunk`, slicing, windows, shuffles,
`index` with real indices) is run on the labels themselves, so a channel is followed through any layout: NCHW to
tokens and back, heads split out of a `qkv` projection, a channel shuffle, a patch merge. Parameters carry labels
of their own elements (`pc`) through the same ops, so a per-channel parameter (BatchNorm, LayerNorm, a layer
scale, a position embedding, an attention-bias table indexed by heads) is found wherever it meets a channel.

Ops that combine values join ids in a union-find: a residual add or a product joins the ids it adds element by
element; a grouped convolution joins each group's inputs and outputs (groups are removed whole); a matrix product
of two activations (attention) joins everything within each batch slice (a head). A class of joined ids is one
*unit*: the channels that must go together. Units with the same tensors form a `Group` (a layer's channels, an
attention block's heads). Zeroing a unit's producer and pass-through slices makes it exactly zero everywhere, so
removing it gives the same output: that is OTO's zero-invariant group. A unit whose zero would not stay zero (a
sigmoid, a softmax, a normalisation over channels, a constant added on the way to a consumer), or that reaches
the network's input or output, is not offered for pruning.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import EdgekitError, first_line
from ..models.probe import check_input_size
from ..models.surgery import apply_plan

NONE = -1


class PruneGraphError(EdgekitError):
    """The channel analysis met an operator or a layout it cannot handle."""


@dataclass
class Entry:
    """Slices of one tensor that belong to a group: unit `u` is `index[u * per:(u + 1) * per]` along `dim`."""

    fqn: str
    dim: int
    index: list[int]
    per: int
    role: str  # "out" (producer), "pass" (follows channel by channel), "in" (consumer)

    def positions(self, units) -> list[int]:
        return [self.index[u * self.per + k] for u in units for k in range(self.per)]

    def rows(self, t: torch.Tensor, size: int) -> torch.Tensor:
        """`size` x (every element of a unit) of tensor `t` (the tensor this entry names)."""
        idx = torch.as_tensor(self.index, dtype=torch.long)
        return t.movedim(self.dim, 0).index_select(0, idx).reshape(size, -1)


@dataclass
class Group:
    id: int
    size: int  # units
    entries: list[Entry] = field(default_factory=list)
    # sizes the modules' code holds (a head count in a reshape, a split's parts): [module, size, shrink per unit]
    sizes: list[list] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "size": self.size,
            "entries": [[e.fqn, e.dim, e.index, e.per, e.role] for e in self.entries],
            "sizes": [list(x) for x in self.sizes],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Group:
        size, entries = int(d["size"]), []
        for item in d["entries"]:
            if len(item) == 4:  # edgekit-plan/1: one channel per unit from `offset`
                fqn, dim, offset, role = item
                entries.append(Entry(str(fqn), int(dim), list(range(int(offset), int(offset) + size)), 1, str(role)))
            else:
                fqn, dim, index, per, role = item
                entries.append(Entry(str(fqn), int(dim), [int(i) for i in index], int(per), str(role)))
        return cls(int(d["id"]), size, entries, [list(x) for x in d.get("sizes", [])])


# Elementwise ops that map zero to zero (a zeroed channel stays zero) and ops that do not.
_ZERO_KEEPING = {
    "relu", "gelu", "hardswish", "hardtanh", "silu", "leaky_relu", "relu6", "elu", "tanh", "abs", "neg",
    "dropout", "native_dropout", "mish", "erf", "sqrt", "square", "sin", "sign", "clamp", "clip", "celu", "selu",
    "alias", "clone", "contiguous", "detach", "lift_fresh_copy", "to", "_to_copy", "type_as", "pow", "round",
    "floor", "ceil", "trunc",
}  # fmt: skip
_ZERO_BREAKING = {
    "sigmoid", "hardsigmoid", "exp", "cos", "softplus", "reciprocal", "rsqrt", "log", "log1p", "softmax",
    "_softmax", "log_softmax", "_log_softmax", "logical_not", "bitwise_not", "isnan", "isinf", "expm1",
}  # fmt: skip
# Ops that only move data: run on the labels as they are (argument 0 is the data; the rest are real values).
_MOVES = {
    "view", "reshape", "_unsafe_view", "permute", "transpose", "t", "expand", "slice", "select", "unsqueeze",
    "squeeze", "flatten", "unflatten", "roll", "flip", "index_select", "index", "gather", "repeat", "narrow",
    "pixel_shuffle", "pixel_unshuffle", "split", "split_with_sizes", "chunk", "unbind", "movedim", "unfold",
    "channel_shuffle", "as_strided", "tensor_split", "diagonal", "tile", "repeat_interleave", "im2col",
    "reshape_as", "view_as", "expand_as", "pad", "constant_pad_nd",
}  # fmt: skip
_MULTI_DATA = {"cat", "stack", "concat", "concatenate", "hstack", "vstack"}
_SCATTERS = {"slice_scatter", "select_scatter", "index_put", "scatter", "masked_scatter"}
_CONSTANT = {
    "arange", "zeros", "ones", "full", "empty", "scalar_tensor", "zeros_like", "ones_like", "full_like",
    "empty_like", "new_zeros", "new_ones", "new_full", "new_empty", "rand", "randn", "rand_like", "randn_like",
    "eye", "linspace", "tensor", "sym_size", "sym_numel", "sym_stride", "_local_scalar_dense", "item",
    "argmax", "argmin", "argsort", "bucketize", "nonzero",
}  # fmt: skip
_IGNORED = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size", "_assert_async"}
_SPATIAL = {
    "adaptive_avg_pool2d", "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool2d",
    "upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d", "_upsample_bilinear2d_aa",
    "upsample_bicubic2d", "avg_pool1d", "adaptive_avg_pool1d", "max_pool1d",
}  # fmt: skip
_ADDS = {"add", "sub", "rsub", "maximum", "minimum", "fmax", "fmin", "lerp", "where", "addcmul"}
_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "bitwise_and", "bitwise_or"}


@dataclass
class Site:
    """A tensor whose channel dims a reshape, split or slice lays out: `grid` holds its channel ids over those dims
    (sizes `sizes`). Removing units must leave a rectangle (each unit a slab: whole hyperplanes along one dim), and
    where the sizes are numbers in the module's code (`literal`), the plan says how they change."""

    module: str
    grid: torch.Tensor
    literal: bool
    sizes: list[int]
    counted: list[int] | None = None  # the grid dims whose sizes the module holds (None: all)


def _name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    return getattr(target, "__name__", str(target)).split(".")[0]


@dataclass
class Val:
    """One value of the graph: the real value, and beside each tensor its channel ids and parameter elements."""

    real: Any
    lab: Any = None  # int64 tensor (or tuple of them, for an op with several outputs): channel ids, NONE elsewhere
    pc: Any = None  # int64 tensor: global ids of the parameter elements it carries, NONE elsewhere
    taint: frozenset = frozenset()  # channel ids that may be non-zero here after their unit is zeroed
    broken: bool = False  # a parameter-derived value that is not zero where its parameter is zeroed

    @property
    def tracked(self) -> bool:
        return self.lab is not None


class ChannelGraph:
    """Runs the analysis over one exported, functionalized graph; `groups()` is the result."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        was_training = model.training
        # A module that caches tensors made from its parameters when put in evaluation mode (LeViT's attention
        # biases, indexed, as `ab`) is read in training mode, where its forward uses the parameters themselves
        # (at batch 2: batch statistics need more than one value per channel).
        caches = any(type(m).train is not nn.Module.train for m in model.modules())
        if caches:
            example = example.expand(2, *example.shape[1:]).contiguous()
        model.train(caches)
        try:
            with torch.no_grad():
                ep = torch.export.export(model, (example,))
                if _mutates(ep):  # functional ops only: `x += y` -> add, `relu_` -> relu (costs a second trace)
                    ep = ep.run_decompositions({})
                self.ep = ep
        except Exception as e:  # noqa: BLE001 - the user's network does not trace
            raise PruneGraphError(
                f"torch.export cannot trace this network ({type(e).__name__}: {first_line(e)}); "
                "channel analysis needs a traceable forward"
            ) from None
        finally:
            model.train(was_training)
        self.example = example
        self.parent: list[int] = []
        self.entries: dict[int, list[tuple[str, int, int, str]]] = {}
        self.fixed: set[int] = set()
        self.unsafe: set[int] = set()
        sig = self.ep.graph_signature
        self.params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        self.weights = set(sig.inputs_to_parameters.values())
        self.lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}))  # tensors made in forward
        self.state = {**dict(self.ep.named_parameters()), **dict(self.ep.named_buffers()), **self.ep.constants}
        self.sites: list[Site] = []  # reshapes, splits and slices of channel dims (see `Site`)
        self.poffsets: list[tuple[int, str]] = []  # (first global element id, fqn), ascending
        self.pnext = 0
        with torch.no_grad():
            self._run()

    # -- ids ------------------------------------------------------------------------------------
    def _fresh(self, n: int) -> torch.Tensor:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        for i in range(start, start + n):
            self.entries[i] = []
        return torch.arange(start, start + n)

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def _union_pairs(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Join a[i] with b[i] wherever both are ids."""
        both = (a >= 0) & (b >= 0) & (a != b)
        if both.any():
            for x, y in _unique_pairs(a[both], b[both]):
                self.union(x, y)

    def _union_all(self, lab: torch.Tensor) -> int | None:
        ids: list[int] = torch.unique(lab[lab >= 0]).tolist()
        for i in ids[1:]:
            self.union(ids[0], i)
        return ids[0] if ids else None

    def _pc_owner(self, pid: int) -> tuple[str, int]:
        lo, hi = 0, len(self.poffsets) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.poffsets[mid][0] <= pid:
                lo = mid
            else:
                hi = mid - 1
        start, fqn = self.poffsets[lo]
        return fqn, pid - start

    # -- the walk -------------------------------------------------------------------------------
    def _run(self) -> None:
        env: dict[torch.fx.Node, Val] = {}
        last_use: dict[torch.fx.Node, torch.fx.Node] = {}
        for node in self.ep.graph.nodes:
            for arg in node.all_input_nodes:
                last_use[arg] = node
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                env[node] = self._placeholder(node)
            elif node.op == "call_function":
                self.node = node
                env[node] = self._call(node, env)
            elif node.op == "output":
                for arg in _flat(node.args):
                    v = env.get(arg) if isinstance(arg, torch.fx.Node) else None
                    for lab in _tensors(v.lab if v else None):
                        self.fixed.update(torch.unique(lab[lab >= 0]).tolist())
            for arg in node.all_input_nodes:  # free labels nobody reads again
                if last_use.get(arg) is node and arg.op != "placeholder":
                    env.pop(arg, None)

    def _placeholder(self, node) -> Val:
        if node.name in self.lifted:
            return Val(self.state[self.lifted[node.name]])
        if node.name in self.params:
            fqn = self.params[node.name]
            t = self.state[fqn]
            if not isinstance(t, torch.Tensor):
                return Val(t)
            self.poffsets.append((self.pnext, fqn))
            pc = torch.arange(self.pnext, self.pnext + t.numel()).view(t.shape)
            self.pnext += max(1, t.numel())
            real = t.detach() if fqn in self.weights else t.detach().clone()  # a buffer may be updated (statistics)
            return Val(real, lab=torch.full(t.shape, NONE), pc=pc)
        ids = self._fresh(self.example.shape[1])
        self.fixed.update(ids.tolist())  # the network's input channels (RGB) stay
        shape = [1] * self.example.dim()
        shape[1] = -1
        lab = ids.view(shape).expand(self.example.shape).clone()
        return Val(self.example, lab=lab, pc=torch.full(self.example.shape, NONE))

    def _where(self) -> str:
        stack = self.node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else ""
        return f"{self.node.target}" + (f" in module '{path}'" if path else "")

    def fail(self, why: str) -> PruneGraphError:
        return PruneGraphError(
            f"channel analysis cannot handle operator {self._where()}: {why}; "
            "prune a network without it, or use unstructured pruning"
        )

    def _call(self, node, env) -> Val:
        name = _name(node.target)
        args = _map(node.args, env)
        kwargs = _map(node.kwargs, env)
        real = node.target(*_real(args), **_real(kwargs))
        if name in _IGNORED:
            return Val(real)
        vals = [a for a in _flat((args, kwargs)) if isinstance(a, Val) and a.tracked]
        if name == "getitem":
            src, i = args
            if isinstance(src, Val) and isinstance(src.lab, (tuple, list)):
                return Val(real, src.lab[i], src.pc[i], src.taint, src.broken)
            return Val(real)
        if not vals or name in _CONSTANT:
            return Val(real)
        if not isinstance(real, (torch.Tensor, tuple, list)):
            return Val(real)
        handler = getattr(self, f"_op_{name}", None)
        if handler is not None:
            return handler(node, args, kwargs, real)
        if name in _MOVES:
            return self._move(args, kwargs, node.target, real)
        if name in _MULTI_DATA:
            return self._concat(args, kwargs, node.target, real)
        if name in _SCATTERS:
            return self._scatter(args, kwargs, node.target, real)
        if name in _ZERO_KEEPING or name in _ZERO_BREAKING:
            return self._unary(args[0], real, breaks=name in _ZERO_BREAKING)
        if name in _SPATIAL:
            return self._spatial(args[0], real)
        if name in _ADDS:
            return self._elementwise(args, real, product=False, name=name)
        if name in ("mul", "div", "true_divide", "floor_divide", "remainder", "fmod", "bitwise_xor"):
            return self._elementwise(args, real, product=True, name=name)
        if name in _COMPARISONS:
            return self._elementwise(args, real, product=False, name=name, mask=True)
        raise self.fail("no rule for it")

    # -- data movement --------------------------------------------------------------------------
    def _move(self, args, kwargs, target, real) -> Val:
        src = args[0]
        if not isinstance(src, Val) or not src.tracked:
            raise self.fail("it moves a tensor edgekit does not follow")
        rest, kw = _real(args[1:]), _real(kwargs)
        name = _name(target)
        if name in ("view", "_unsafe_view"):  # labels may be strided where the real tensor was made contiguous
            target = torch.ops.aten.reshape.default
        elif name in ("pad", "constant_pad_nd"):  # padding is a constant: no channel
            if name == "pad" and len(rest) > 1 and rest[1] not in ("constant", None):
                raise self.fail(f"{rest[1]} padding repeats elements; edgekit follows constant padding only")
            rest = (rest[0],) + (("constant", NONE) if name == "pad" else (NONE,))
            kw = {}
        lab = target(src.lab, *rest, **kw)
        pc = target(src.pc, *rest, **kw)
        if name in ("view", "_unsafe_view", "reshape", "unflatten", "flatten"):
            self._site(src.lab, literal=True)
            self._site(lab, literal=True)
        elif name in ("split", "chunk", "tensor_split", "split_with_sizes", "slice", "narrow"):
            self._split_site(name, src.lab, args)
        return Val(real, lab=lab, pc=pc, taint=src.taint, broken=src.broken)

    def _module(self) -> str:
        stack = self.node.meta.get("nn_module_stack") or {}
        return next(reversed(stack.values()))[0] if stack else ""

    def _site(self, lab: torch.Tensor, literal: bool, along: int | None = None) -> None:
        """Note the channel dims of a tensor a reshape, split or slice reads or writes (see `Site`); `along`: the
        one dim whose size the module holds (a split's part), else every channel dim's."""
        if not bool((lab >= 0).any()):
            return
        varying = [d for d in range(lab.dim()) if lab.shape[d] > 1 and bool((lab.amax(d) != lab.amin(d)).any())]
        if along is not None and along not in varying:
            varying = sorted([*varying, along])
        if not varying:
            return
        idx = tuple(slice(None) if d in varying else 0 for d in range(lab.dim()))
        grid = lab[idx].clone()
        counted = None if along is None else [varying.index(along)]
        self.sites.append(Site(self._module(), grid, literal, [int(lab.shape[d]) for d in varying], counted))

    def _split_site(self, name: str, lab: torch.Tensor, args) -> None:
        dim = int(args[2] if name in ("slice", "narrow") else (args[2] if len(args) > 2 else 0)) % lab.dim()
        n = lab.shape[dim]
        if n < 2 or not bool((lab.amax(dim) != lab.amin(dim)).any()):
            return
        if name == "chunk" or (name == "split" and isinstance(args[1], int)):
            parts = int(args[1]) if name == "chunk" else -(-n // int(args[1]))
            if n % parts == 0:  # equal parts, sized at run time: the parts must lose the same channels
                self._site(lab.movedim(dim, -1).unflatten(-1, (parts, n // parts)), literal=False)
            return
        ranges: list[tuple[int, int]] = []
        if name in ("split_with_sizes", "split") and isinstance(args[1], (list, tuple)):
            start = 0
            for k in args[1]:  # each part's size is a number the module holds
                ranges.append((start, int(k)))
                start += int(k)
        elif name in ("slice", "narrow"):
            start = int(args[3]) if len(args) > 3 and args[3] is not None else 0
            if name == "narrow":
                end = start + int(args[4])
            else:
                end = int(args[4]) if len(args) > 4 and args[4] is not None else n
                end = min(end, n) if end >= 0 else n + end
            if start == 0 and end < n:  # x[:, :k]: k is a number the module holds
                ranges.append((0, end))
        for start, k in ranges:
            self._site(lab.narrow(dim, start, k), literal=True, along=dim)

    def _labels_of(self, a, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(a, Val) and a.tracked:
            return a.lab, a.pc
        shape = like.shape if not isinstance(a, Val) or not isinstance(a.real, torch.Tensor) else a.real.shape
        return torch.full(shape, NONE), torch.full(shape, NONE)

    def _concat(self, args, kwargs, target, real) -> Val:
        items = args[0]
        reals = _real(items)
        pairs = [self._labels_of(a, r) for a, r in zip(items, reals)]
        rest, kw = _real(args[1:]), _real(kwargs)
        lab = target([p[0] for p in pairs], *rest, **kw)
        pc = target([p[1] for p in pairs], *rest, **kw)
        tracked = [a for a in items if isinstance(a, Val) and a.tracked]
        return Val(
            real,
            lab=lab,
            pc=pc,
            taint=frozenset().union(*(a.taint for a in tracked)),
            broken=any(a.broken for a in tracked),
        )

    def _scatter(self, args, kwargs, target, real) -> Val:
        base, src = args[0], args[1] if len(args) > 1 else None
        rb = base.real if isinstance(base, Val) else base
        if target.__name__.startswith("index_put"):
            lb, pb = self._labels_of(base, rb)
            vals = args[2]
            lv, pv = self._labels_of(vals, vals.real if isinstance(vals, Val) else torch.as_tensor(vals))
            rest = _real(args[1:2])
            lab, pc = target(lb, *rest, lv, *_real(args[3:])), target(pb, *rest, pv, *_real(args[3:]))
        else:
            lb, pb = self._labels_of(base, rb)
            rs = src.real if isinstance(src, Val) else src
            ls, ps = self._labels_of(src, rs) if isinstance(rs, torch.Tensor) else (src, src)
            rest = _real(args[2:])
            lab, pc = target(lb, ls, *rest, **_real(kwargs)), target(pb, ps, *rest, **_real(kwargs))
        tracked = [a for a in args if isinstance(a, Val) and a.tracked]
        return Val(real, lab=lab, pc=pc, taint=frozenset().union(*(a.taint for a in tracked)))

    # -- elementwise ----------------------------------------------------------------------------
    def _unary(self, src, real, breaks: bool) -> Val:
        if not isinstance(src, Val) or not src.tracked:
            return Val(real)
        lab = src.lab if src.lab.shape == real.shape else src.lab.expand(real.shape)
        pc = src.pc if src.pc.shape == real.shape else src.pc.expand(real.shape)
        taint = src.taint | (_ids(lab) if breaks else frozenset())
        return Val(real, lab=lab, pc=pc, taint=taint, broken=src.broken or breaks)

    def _elementwise(self, args, real, product: bool, name: str, mask: bool = False) -> Val:
        """x (op) y element by element. Channels that meet are joined. Where a channel meets no channel of its
        own unit, a product keeps its zero, and so does a sum whose other operand is a parameter that follows the
        channel (a bias, a layer scale, a position embedding: zeroed with it); any other sum is not zero."""
        operands = list(args[1:3]) if name == "where" else [a for a in args if a is not None]
        if name in ("lerp", "addcmul"):
            operands = [a for a in args[:3] if a is not None]
        shape = real.shape
        tensors, scalar = [], False
        for a in operands:
            if isinstance(a, Val) and isinstance(a.real, torch.Tensor):
                tensors.append(a)
            elif isinstance(a, (int, float, bool)) and not (product or a == 0):
                scalar = True
        labs = [t.lab.expand(shape) if t.tracked else torch.full(shape, NONE) for t in tensors]
        pcs = [t.pc.expand(shape) if t.tracked else torch.full(shape, NONE) for t in tensors]
        lab = torch.full(shape, NONE)
        for x in labs:  # join the channels that meet
            self._union_pairs(lab, x)
            lab = torch.where(lab >= 0, lab, x)
        pc = torch.full(shape, NONE)
        attached = torch.zeros(shape, dtype=torch.bool)
        for p, t in zip(pcs, tensors):
            pc = torch.where(pc >= 0, pc, p)
            ok = self._attach(lab, p)
            if not t.broken:
                attached |= ok
        taint: frozenset = frozenset().union(*(t.taint for t in tensors if t.tracked))
        channel = lab >= 0
        if product and name in ("mul", "bitwise_xor") and taint:
            # zero where any operand is a zeroed channel that stays zero (`scale * input` of an SE gate): tainted
            # only where every operand is tainted
            where = torch.ones(shape, dtype=torch.bool)
            for x, t in zip(labs, tensors):
                if t.tracked:
                    where &= torch.isin(x, torch.tensor(sorted(t.taint), dtype=torch.long)) | (x < 0)
            taint = _ids(lab[where & channel])
        if mask:
            taint |= _ids(lab)
        elif name in ("div", "true_divide", "floor_divide", "remainder", "fmod") and len(labs) > 1:
            taint |= _ids(labs[1])  # a zeroed denominator is a division by zero
        elif not product:
            n_channels = sum((x >= 0).int() for x in labs)
            alone = channel & (n_channels == 1)
            if scalar:
                taint |= _ids(lab)
            elif len(tensors) > 1:
                taint |= _ids(lab[alone & ~attached])
        broken = any(t.broken for t in tensors) or (scalar and not product)
        return Val(real, lab=lab, pc=pc, taint=taint, broken=broken)

    def _attach(self, lab: torch.Tensor, pc: torch.Tensor) -> torch.Tensor:
        """Parameter elements that meet channel ids element by element follow those channels ('pass') where one
        dim of the parameter says which channel; the mask of the positions where that holds."""
        both = (lab >= 0) & (pc >= 0)
        ok = torch.zeros(lab.shape, dtype=torch.bool)
        if not both.any():
            return ok
        by_param: dict[str, list[tuple[int, int, int]]] = {}
        for cid, pid in _unique_pairs(lab[both], pc[both]):
            fqn, flat = self._pc_owner(pid)
            by_param.setdefault(fqn, []).append((cid, flat, pid))
        good: list[str] = []
        for fqn, items in by_param.items():
            shape = tuple(self.state[fqn].shape)
            coords = torch.tensor([_unravel(f, shape) for _, f, _ in items]).view(len(items), len(shape))
            cids = torch.tensor([c for c, _, _ in items])
            dim = _param_dim(coords, cids, shape)
            if dim is None:
                continue  # not a per-channel parameter (a scalar, a matrix every channel meets): it does not follow
            for c, coord in {(c, int(p)) for c, p in zip(cids.tolist(), coords[:, dim].tolist())}:
                self.entries[c].append((fqn, dim, coord, "pass"))
            good.append(fqn)
        if good:
            starts = torch.tensor([start for start, _ in self.poffsets])
            attached = torch.tensor([fqn in good for _, fqn in self.poffsets])
            owner = torch.searchsorted(starts, pc.clamp(min=0).contiguous(), right=True) - 1
            ok = both & attached[owner]
        return ok

    def _spatial(self, src, real) -> Val:
        """Pooling and resampling over the spatial dims: the labels must not vary there."""
        if not isinstance(src, Val) or not src.tracked:
            return Val(real)
        out = real[0] if isinstance(real, (tuple, list)) else real
        lab, pc = src.lab, src.pc
        sdims = tuple(range(2, lab.dim()))
        if sdims and ((lab.amax(sdims) != lab.amin(sdims)).any() or (pc.amax(sdims) != pc.amin(sdims)).any()):
            raise self.fail("it pools over a dim whose elements belong to different channels")
        idx = tuple([slice(None), slice(None)] + [slice(0, 1)] * len(sdims))
        lab, pc = lab[idx].expand(out.shape), pc[idx].expand(out.shape)
        if isinstance(real, (tuple, list)):  # max_pool2d_with_indices
            return Val(
                real, lab=(lab, torch.full(out.shape, NONE)), pc=(pc, torch.full(out.shape, NONE)), taint=src.taint
            )
        return Val(real, lab=lab, pc=pc, taint=src.taint)

    # -- producers ------------------------------------------------------------------------------
    def _param(self, v) -> str | None:
        """The parameter a weight argument is, when it is one whole parameter (not a computed tensor)."""
        if not isinstance(v, Val) or not v.tracked:
            return None
        flat = v.pc.flatten()
        if flat.numel() == 0 or flat[0] < 0:
            return None
        fqn, start = self._pc_owner(int(flat[0]))
        t = self.state[fqn]
        if start == 0 and tuple(v.pc.shape) == tuple(t.shape) and bool((v.lab < 0).all()):
            expect = flat[0] + torch.arange(flat.numel())
            if torch.equal(flat, expect):
                return fqn
        return None

    def _consume(self, lab: torch.Tensor, dim: int, taint: frozenset) -> list[int | None]:
        """The one channel id at each position along `dim` of a layer's input (None: a constant there)."""
        moved = lab.movedim(dim, 0).reshape(lab.shape[dim], -1)
        hi, lo = moved.amax(1), moved.masked_fill(moved < 0, torch.iinfo(torch.long).max).amin(1)
        ids: list[int | None] = []
        for j in range(moved.shape[0]):
            h, low = int(hi[j]), int(lo[j])
            if h < 0:
                ids.append(None)  # a constant (padding, a token edgekit does not follow) at this position
                continue
            if low != h:
                raise self.fail(f"input position {j} mixes channels {low} and {h}")
            ids.append(h)
            if h in taint:
                self.unsafe.add(h)
        return ids

    def _op_fill(self, node, args, kwargs, real) -> Val:
        return Val(real)  # every element a constant

    def _op_convolution(self, node, args, kwargs, real) -> Val:
        x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
        transposed = bool(args[6]) if len(args) > 6 else False
        groups = int(args[8]) if len(args) > 8 else 1
        return self._conv(x, w, b, groups, real, transposed)

    def _op_conv2d(self, node, args, kwargs, real) -> Val:
        x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
        groups = int(args[6]) if len(args) > 6 else int(kwargs.get("groups", 1))
        return self._conv(x, w, b, groups, real, False)

    _op_conv1d = _op_conv2d

    def _conv(self, x, w, b, groups, real, transposed) -> Val:
        wf, bf = self._param(w), self._param(b) if isinstance(b, Val) else None
        if wf is None or not isinstance(x, Val) or not x.tracked:
            raise self.fail("its weight is computed, not a parameter")
        if transposed:
            raise self.fail("transposed convolutions are not followed")
        c_in, c_out = int(x.real.shape[1]), int(real.shape[1])
        cin_g, cout_g = c_in // groups, c_out // groups
        ins = self._consume(x.lab, 1, x.taint)
        outs = self._fresh(c_out)
        for o, cid in enumerate(outs.tolist()):
            self.entries[cid].append((wf, 0, o, "out"))
            if bf:
                self.entries[cid].append((bf, 0, o, "out"))
        if groups == 1:
            for j, cid in enumerate(ins):
                if cid is not None:
                    self.entries[cid].append((wf, 1, j, "in"))
        else:  # a group goes whole: its inputs and outputs are one unit
            for g in range(groups):
                members = [c for c in ins[g * cin_g : (g + 1) * cin_g] if c is not None]
                members += outs[g * cout_g : (g + 1) * cout_g].tolist()
                for m in members[1:]:
                    self.union(members[0], m)
        shape = [1] * real.dim()
        shape[1] = -1
        return Val(real, lab=outs.view(shape).expand(real.shape), pc=torch.full(real.shape, NONE))

    def _op_linear(self, node, args, kwargs, real) -> Val:
        x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
        wf, bf = self._param(w), self._param(b) if isinstance(b, Val) else None
        if wf is None or not isinstance(x, Val) or not x.tracked:
            raise self.fail("its weight is computed, not a parameter")
        ins = self._consume(x.lab, x.lab.dim() - 1, x.taint)
        for j, cid in enumerate(ins):
            if cid is not None:
                self.entries[cid].append((wf, 1, j, "in"))
        outs = self._fresh(int(real.shape[-1]))
        for o, cid in enumerate(outs.tolist()):
            self.entries[cid].append((wf, 0, o, "out"))
            if bf:
                self.entries[cid].append((bf, 0, o, "out"))
        return Val(real, lab=outs.expand(real.shape), pc=torch.full(real.shape, NONE))

    def _op_addmm(self, node, args, kwargs, real) -> Val:
        raise self.fail("addmm is not followed")

    def _op_matmul(self, node, args, kwargs, real) -> Val:
        a, b = args[0], args[1]
        if self._param(b) is not None:  # x @ W: a linear layer written by hand
            raise self.fail("a matrix product with a parameter is not followed (use nn.Linear)")
        return self._products([a, b], real)

    _op_bmm = _op_mm = _op_matmul

    def _op_scaled_dot_product_attention(self, node, args, kwargs, real) -> Val:
        return self._products(list(args[:3]), real)

    def _products(self, operands, real) -> Val:
        """A product of activations (attention): what meets in one batch slice (a head) is one unit, and so is
        the result there. The result is zero where the unit is, unless every operand was already tainted."""
        if real.dim() < 3:
            raise self.fail("a matrix product of two activations without batch dims is not followed")
        batch = tuple(real.shape[:-2])
        unit = torch.full(batch, NONE).view(-1)
        tainted = True
        for v in operands:
            if not isinstance(v, Val) or not v.tracked:
                tainted = False
                continue
            lab = v.lab if tuple(v.lab.shape[:-2]) == batch else v.lab.expand(*batch, *v.lab.shape[-2:])
            for i, row in enumerate(lab.reshape(-1, lab.shape[-2] * lab.shape[-1])):
                root = self._union_all(row)
                if root is not None and unit[i] >= 0:
                    self.union(int(unit[i]), root)
                elif root is not None:
                    unit[i] = root
            tainted &= _ids(v.lab) <= v.taint
            self._attach(lab, v.pc.expand(lab.shape))
        out = unit.view(*batch, 1, 1).expand(real.shape)
        return Val(real, lab=out, pc=torch.full(real.shape, NONE), taint=_ids(out) if tainted else frozenset())

    # -- normalisations and reductions ----------------------------------------------------------
    def _per_channel_params(self, x: Val, params, dim: int, real_shape) -> None:
        for p in params:
            if isinstance(p, Val) and p.tracked and p.real is not None and p.real.dim() == 1:
                shape = [1] * len(real_shape)
                shape[dim] = -1
                self._attach(x.lab, p.pc.view(shape).expand(real_shape))

    def _op__native_batch_norm_legit_no_training(self, node, args, kwargs, real) -> Val:
        x = args[0]
        out = real[0] if isinstance(real, (tuple, list)) else real
        self._per_channel_params(x, args[1:5], 1, out.shape)
        lab, pc = x.lab, x.pc
        if isinstance(real, (tuple, list)):  # (out, mean, invstd[, new running mean, new running var])
            none = torch.full((0,), NONE)
            return Val(real, lab=(lab, *[none] * (len(real) - 1)), pc=(pc, *[none] * (len(real) - 1)), taint=x.taint)
        return Val(real, lab=lab, pc=pc, taint=x.taint)

    _op_batch_norm = _op__native_batch_norm_legit_no_training
    _op__native_batch_norm_legit = _op__native_batch_norm_legit_no_training
    _op_native_batch_norm = _op__native_batch_norm_legit_no_training
    _op__native_batch_norm_legit_functional = _op__native_batch_norm_legit_no_training

    def _op_layer_norm(self, node, args, kwargs, real) -> Val:
        x, shape = args[0], list(args[1])
        out = real[0] if isinstance(real, (tuple, list)) else real
        for p in args[2:4]:
            if isinstance(p, Val) and p.tracked:
                self._attach(x.lab, p.pc.expand(out.shape))
        n = len(shape)
        # the mean and variance are over the normalised dims: a zeroed channel there changes every other one
        dims = tuple(range(x.lab.dim() - n, x.lab.dim()))
        taint = x.taint | _ids(x.lab) if (x.lab.amax(dims) != x.lab.amin(dims)).any() else x.taint
        if isinstance(real, (tuple, list)):
            none = torch.full((0,), NONE)
            return Val(real, lab=(x.lab, none, none), pc=(x.pc, none, none), taint=taint)
        return Val(real, lab=x.lab, pc=x.pc, taint=taint)

    _op_native_layer_norm = _op_layer_norm

    def _op_group_norm(self, node, args, kwargs, real) -> Val:
        x = args[0]
        out = real[0] if isinstance(real, (tuple, list)) else real
        # group_norm(x, groups, weight, bias, ...); native_group_norm(x, weight, bias, N, C, HxW, groups, eps)
        affine = args[1:3] if _name(node.target) == "native_group_norm" else args[2:4]
        self._per_channel_params(x, affine, 1, out.shape)
        taint = x.taint | _ids(x.lab)
        if isinstance(real, (tuple, list)):
            none = torch.full((0,), NONE)
            return Val(real, lab=(x.lab, none, none), pc=(x.pc, none, none), taint=taint)
        return Val(real, lab=x.lab, pc=x.pc, taint=taint)

    _op_native_group_norm = _op_group_norm

    def _reduce(self, args, kwargs, real, how: str) -> Val:
        x = args[0]
        if not isinstance(x, Val) or not x.tracked:
            return Val(real)
        out = real[0] if isinstance(real, (tuple, list)) else real
        dims = args[1] if len(args) > 1 and args[1] is not None else kwargs.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(x.lab.dim()))
        dims = [d % x.lab.dim() for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        keep = [d for d in range(x.lab.dim()) if d not in dims]
        lab = x.lab.permute(*keep, *dims).reshape(*[x.lab.shape[d] for d in keep], -1)
        hi = lab.amax(-1)
        lo = lab.masked_fill(lab < 0, torch.iinfo(torch.long).max).amin(-1)
        mixed = (hi >= 0) & (lo != hi)
        taint = x.taint
        if mixed.any():  # reduced over channels: zeroed ones add nothing to a sum, but change a mean or a maximum
            rows = torch.unique(lab[mixed].reshape(-1, lab.shape[-1]), dim=0)
            for row in rows:
                self._union_all(row)
            if how != "sum":
                taint = taint | _ids(rows)
        return Val(real, lab=hi.reshape(out.shape), pc=torch.full(out.shape, NONE), taint=taint)

    def _op_sum(self, node, args, kwargs, real) -> Val:
        return self._reduce(args, kwargs, real, "sum")

    def _op_mean(self, node, args, kwargs, real) -> Val:
        return self._reduce(args, kwargs, real, "mean")

    _op_var = _op_std = _op_amax = _op_amin = _op_max = _op_min = _op_logsumexp = _op_prod = _op_var_mean = _op_mean
    _op_norm = _op_linalg_vector_norm = _op_mean

    # -- result ---------------------------------------------------------------------------------
    def _roots(self) -> torch.Tensor:
        return torch.tensor([self.find(i) for i in range(len(self.parent))], dtype=torch.long)

    @staticmethod
    def _on(grid: torch.Tensor, roots: torch.Tensor) -> torch.Tensor:
        return torch.where(grid >= 0, roots[grid.clamp(min=0)], grid)

    @staticmethod
    def _plane_roots(g: torch.Tensor, d: int) -> torch.Tensor:
        """Per coordinate along `d`: the one unit its hyperplane holds (ignoring constants), else NONE."""
        planes = g.movedim(d, 0).reshape(g.shape[d], -1)
        big = torch.iinfo(torch.long).max
        hi, lo = planes.amax(1), planes.masked_fill(planes < 0, big).amin(1)
        return torch.where((hi >= 0) & (hi == lo), hi, torch.full_like(hi, NONE))

    def _settle_sites(self) -> None:
        """Join units until every laid-out grid loses whole hyperplanes only (its rest stays a rectangle)."""
        for _ in range(100):
            roots, joined = self._roots(), False
            for site in self.sites:
                if site.grid.dim() < 2:
                    continue
                g = self._on(site.grid, roots)
                present = set(torch.unique(g[g >= 0]).tolist())
                bad = set(present)
                for d in range(g.dim()):  # a unit whose every hyperplane along d holds it alone is a slab along d
                    planes = g.movedim(d, 0).reshape(g.shape[d], -1)
                    mixed = planes[self._plane_roots(g, d) < 0]
                    bad &= set(torch.unique(mixed[mixed >= 0]).tolist())
                for u in sorted(bad):  # a unit that is no slab: join the hyperplanes of its last coordinates
                    last = g.movedim(-1, 0).reshape(g.shape[-1], -1)
                    for j in torch.nonzero((last == u).any(1)).flatten().tolist():
                        row = last[j]
                        if self._union_all(row) is not None and bool((row[row >= 0] != u).any()):
                            joined = True
                    roots = self._roots()
                    g = self._on(site.grid, roots)
            if not joined:
                return
        raise PruneGraphError("channel analysis did not settle the channel layouts of reshapes and splits")

    def _size_changes(self, roots: torch.Tensor) -> dict[int, list[tuple[str, int, int]]]:
        """Per unit: (module, size, by how much it shrinks when the unit goes) for every size a module holds."""
        out: dict[int, list[tuple[str, int, int]]] = {}
        for site in self.sites:
            if not site.literal:
                continue
            g = self._on(site.grid, roots)
            for d in site.counted if site.counted is not None else range(g.dim()):
                planes = self._plane_roots(g, d)
                for u, c in zip(*[t.tolist() for t in torch.unique(planes[planes >= 0], return_counts=True)]):
                    out.setdefault(u, []).append((site.module, site.sizes[d], c))
        return {u: sorted(set(v)) for u, v in out.items()}

    def groups(self) -> list[Group]:
        self._settle_sites()
        roots = self._roots()
        changes = self._size_changes(roots)
        members: dict[int, list[int]] = {}
        for i, r in enumerate(roots.tolist()):
            members.setdefault(r, []).append(i)
        units = []
        for root, ids in members.items():
            if any(i in self.fixed or i in self.unsafe for i in ids):
                continue
            by_key: dict[tuple[str, int, str], set[int]] = {}
            for i in ids:
                for fqn, dim, pos, role in self.entries[i]:
                    by_key.setdefault((fqn, dim, role), set()).add(pos)
            if not any(k[2] == "out" for k in by_key):
                continue
            sizes = tuple(changes.get(root, ()))
            signature = (tuple(sorted((k, len(v)) for k, v in by_key.items())), sizes)
            order = min(min(v) for k, v in by_key.items() if k[2] == "out")
            units.append((signature, order, {k: sorted(v) for k, v in by_key.items()}))
        by_sig: dict[tuple, list] = {}
        for sig, order, slices in units:
            by_sig.setdefault(sig, []).append((order, slices))
        out: list[Group] = []
        for (sig, sizes), items in sorted(by_sig.items(), key=lambda kv: _first_out(kv[0][0], kv[1])):
            if len(items) < 2:
                continue  # one unit: removing it would remove the whole tensor
            items.sort(key=lambda t: t[0])
            entries = []
            for (fqn, dim, role), n in sig:
                index = [p for _, slices in items for p in slices[(fqn, dim, role)]]
                entries.append(Entry(fqn, dim, index, n, role))
            if _overlaps(entries):
                continue  # two units share a slice: not separable
            out.append(Group(len(out), len(items), entries, [list(x) for x in sizes]))
        return out


def _unique_pairs(a: torch.Tensor, b: torch.Tensor) -> list[tuple[int, int]]:
    """The distinct (a[i], b[i]) of two tensors of non-negative ids below 2**31 (one sort of 64-bit keys)."""
    keys = torch.unique((a.reshape(-1) << 32) | b.reshape(-1))
    return list(zip((keys >> 32).tolist(), (keys & 0xFFFFFFFF).tolist()))


def _mutates(ep) -> bool:
    """Does the exported graph hold an in-place op (`add_`, `relu_`, `copy_`)?"""
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None and schema.is_mutable:
            return True
    return False


def _param_dim(coords: torch.Tensor, cids: torch.Tensor, shape) -> int | None:
    """The parameter dim whose index says which channel an element follows (one channel per index)."""
    for d in range(len(shape)):
        if shape[d] < 2:
            continue
        pos = coords[:, d]
        if len(_unique_pairs(pos, cids)) == torch.unique(pos).numel():
            return d
    return None


def _first_out(sig, items) -> tuple:
    fqn = next(k[0] for k, _ in sig if k[2] == "out")
    return (fqn, min(o for o, _ in items))


def _overlaps(entries: list[Entry]) -> bool:
    return any(len(set(e.index)) != len(e.index) for e in entries)


def _ids(lab) -> frozenset:
    if lab is None:
        return frozenset()
    return frozenset(torch.unique(lab[lab >= 0]).tolist())


def _unravel(flat: int, shape) -> list[int]:
    out = []
    for s in reversed(shape):
        out.append(flat % s)
        flat //= s
    return out[::-1]


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for t in x if isinstance(t, torch.Tensor)]
    return []


def _map(a, env):
    if isinstance(a, torch.fx.Node):
        return env[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_map(x, env) for x in a)
    if isinstance(a, dict):
        return {k: _map(v, env) for k, v in a.items()}
    return a


def _real(a):
    if isinstance(a, Val):
        return a.real
    if isinstance(a, (list, tuple)):
        return type(a)(_real(x) for x in a)
    if isinstance(a, dict):
        return {k: _real(v) for k, v in a.items()}
    return a


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


@dataclass
class LeftOut:
    """A group the channel analysis found but the rebuilt network cannot lose, and why."""

    modules: list[str]  # the modules producing its channels
    units: int
    why: str

    def line(self) -> str:
        return f"{', '.join(self.modules)} ({self.units} units): {self.why}"


def analyse_channels(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> tuple[list[Group], list[LeftOut]]:
    """The prunable groups of coupled channels of `model` (traced at batch 1, `input_size`²), and the groups left out
    because the rebuilt network cannot lose them (with the reason, naming the module).

    A network that does not run at `input_size` is an `InputSizeError` first, not an error from inside the trace.
    """
    check_input_size(model, input_size, in_chans=in_chans)
    groups = ChannelGraph(model, torch.zeros(1, in_chans, input_size, input_size)).groups()
    return _removable(model, groups, input_size, in_chans)


def channel_groups(model: nn.Module, input_size: int = 224, in_chans: int = 3) -> list[Group]:
    """The prunable groups of `analyse_channels`."""
    return analyse_channels(model, input_size, in_chans)[0]


def _removable(
    model: nn.Module, groups: list[Group], input_size: int, in_chans: int
) -> tuple[list[Group], list[LeftOut]]:
    """The groups whose removal the rebuilt network survives: a forward of the network with one unit of each
    group removed must compute what it computes with those units zeroed. Code that lays channels out with a
    size it reads from another tensor (`reshape(B, N, C)` after attention, `C // heads` taken from the block's
    input) cannot lose them without being rewritten; the graph, traced at fixed sizes, does not show it.
    All groups are tried at once, and halves of a failing set until the groups that fail are found."""
    x = torch.randn(2, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(0))
    reasons: dict[int, str] = {}

    def differs(subset: list[Group]) -> str | None:
        """None where the rebuilt network computes what the zeroed one does, else why not."""
        zeroed, pruned = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
        try:
            with torch.no_grad():
                for g in subset:
                    _zero(zeroed, g, [g.size - 1])
                apply_plan(pruned, _plan(subset))
                a, b = zeroed(x), pruned(x)
        except Exception as exc:  # noqa: BLE001 - any failure of the rebuilt network means the same: not removable
            return _failure(exc, pruned)
        a, b = (a[0], b[0]) if isinstance(a, (tuple, list)) else (a, b)
        if a.shape != b.shape:
            return f"the rebuilt network's output is {tuple(b.shape)}, not {tuple(a.shape)}"
        if bool((a - b).abs().max() <= 1e-4 * max(1.0, float(a.abs().max()))):
            return None
        return "the rebuilt network computes another output than the zeroed one"

    def failing(subset: list[Group]) -> list[Group]:
        why = differs(subset) if subset else None
        if why is None:
            return []
        if len(subset) == 1:
            reasons[subset[0].id] = why
            return subset
        half = len(subset) // 2
        bad = failing(subset[:half]) + failing(subset[half:])
        if bad:
            return bad
        for g in subset:  # each half alone is fine, together they are not: keep neither
            reasons[g.id] = f"removable alone, not together with the others ({why})"
        return subset

    bad = {g.id for g in failing(groups)}
    left = [
        LeftOut(sorted({e.fqn.rsplit(".", 1)[0] for e in g.entries if e.role == "out"}), g.size, reasons[g.id])
        for g in groups
        if g.id in bad
    ]
    kept = [g for g in groups if g.id not in bad]
    for i, g in enumerate(kept):
        g.id = i
    return kept, left


def _failure(exc: Exception, model: nn.Module) -> str:
    """The first line of an error from the rebuilt network, and the innermost of its modules the error came from."""
    names = {id(m): n for n, m in model.named_modules() if n}
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if id(owner) in names:
            where = names[id(owner)]
        tb = tb.tb_next
    text = first_line(exc) or type(exc).__name__
    return f"{text} (in module '{where}')" if where else text


def _zero(model: nn.Module, g: Group, units: list[int]) -> None:
    for e in g.entries:
        if e.role != "in" and not e.fqn.endswith("running_var"):
            t = model.get_parameter(e.fqn) if _is_param(model, e.fqn) else model.get_buffer(e.fqn)
            t.index_fill_(e.dim, torch.as_tensor(e.positions(units), dtype=torch.long), 0.0)


def _plan(subset: list[Group]) -> dict:
    """A plan removing the last unit of each group (the shape `prune.plan.make_plan` writes)."""
    shrink: dict[tuple[str, int], int] = {}
    for g in subset:
        for module, size, n in g.sizes:
            shrink[(module, size)] = shrink.get((module, size), 0) + n
    return {
        "groups": [{**g.to_dict(), "keep": list(range(g.size - 1))} for g in subset],
        "sizes": [[m, size, size - n] for (m, size), n in shrink.items()],
    }


def _is_param(model: nn.Module, fqn: str) -> bool:
    return fqn in dict(model.named_parameters())
