"""Cost features of a network, read from the ATen ops one forward pass dispatches.

Each op falls in one kind; per kind the features are its multiply-accumulates (compute ops) or the
elements it writes (memory-bound ops), and the bytes it moves (inputs, weights and output). The model is
run in its export form (MobileOne reparameterized, BatchNorm folded into convolutions), so the ops are
the ones the runtimes see, not the training graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..compile import prepare_for_export

# Views cost nothing in any runtime here (they become strides, or are fused into their consumer).
_FREE = {
    "view",
    "_unsafe_view",
    "reshape",
    "expand",
    "unsqueeze",
    "squeeze",
    "t",
    "detach",
    "alias",
    "lift_fresh",
    "_reshape_alias",
    "as_strided",
    "unbind",
    "split",
    "split_with_sizes",
    "chunk",
    "select",
    "empty",
    "empty_like",
    "zeros",
    "ones",
    "full",
    "arange",
    "scalar_tensor",
    "_to_copy",
}
_GEMM = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear"}
_REDUCE = {
    "mean",
    "sum",
    "amax",
    "max",
    "avg_pool2d",
    "max_pool2d",
    "max_pool2d_with_indices",
    "_adaptive_avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
}
_MOVE = {
    "cat",
    "stack",
    "clone",
    "copy",
    "contiguous",
    "permute",
    "transpose",
    "roll",
    "index",
    "index_select",
    "gather",
    "slice",
    "constant_pad_nd",
    "pad",
    "repeat",
    "flip",
    "pixel_shuffle",
}

# What each kind is measured by: MACs for compute ops, elements written for memory-bound ones.
FEATURES = (
    "conv1x1_gmacs",
    "conv_gmacs",
    "dwconv_gmacs",
    "gemm_gmacs",
    "elementwise_melems",
    "reduce_melems",
    "move_mbytes",
    "compute_mbytes",
    "ops",
)


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _bytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.f = dict.fromkeys(FEATURES, 0.0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__.rstrip("_")  # in-place relu_ counts as relu
        if name in _FREE:
            return out
        ins = [a for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        moved = _bytes(ins) + _bytes(outs)
        f = self.f
        f["ops"] += 1
        if name == "convolution":
            x, w = args[0], args[1]
            groups = int(args[8]) if len(args) > 8 else 1
            macs = _numel(outs[0]) * w.shape[1] * math.prod(w.shape[2:])
            if groups > 1 and groups == x.shape[1]:
                kind = "dwconv"
            elif math.prod(w.shape[2:]) == 1:
                kind = "conv1x1"
            else:
                kind = "conv"
            f[f"{kind}_gmacs"] += macs / 1e9
            f["compute_mbytes"] += moved / 1e6
        elif name in _GEMM:
            a = args[1] if name in ("addmm", "baddbmm") else args[0]
            f["gemm_gmacs"] += _numel(outs[0]) * a.shape[-1] / 1e9
            f["compute_mbytes"] += moved / 1e6
        elif name in _REDUCE:
            f["reduce_melems"] += _numel(ins[0]) / 1e6 if ins else 0.0
        elif name in _MOVE:
            f["move_mbytes"] += moved / 1e6
        else:  # pointwise arithmetic and activations
            f["elementwise_melems"] += sum(_numel(o) for o in outs) / 1e6
        return out


@torch.no_grad()
def cost_features(model: nn.Module, input_size: int, in_chans: int = 3) -> dict[str, float]:
    """The features of one batch-1 forward pass of `model` in export form, at `input_size`."""
    net = prepare_for_export(model)
    counter = _Counter()
    with counter:
        net(torch.zeros(1, in_chans, input_size, input_size))
    return dict(counter.f)
