"""MobileOne (Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone", CVPR 2023).

Train-time blocks carry over-parameterized branches (skip BN, several k x k conv-BN branches,
a 1x1 conv-BN "scale" branch); `reparameterize()` folds them into one conv with bias so the
deployed network is a plain chain of conv (+SE) + ReLU.
"""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .layers import init_cnn_weights
from .registry import IPHONE12, ModelCard, Paper, register

__all__ = [
    "SEBlock",
    "MobileOneBlock",
    "MobileOne",
    "MOBILEONE_CONFIGS",
    "mobileone",
    "reparameterize_model",
]


class SEBlock(nn.Module):
    """Squeeze-excitation: global mean, 1x1 reduce + ReLU, 1x1 expand + sigmoid, channel scale."""

    def __init__(self, channels: int, rd_ratio: float = 0.0625) -> None:
        super().__init__()
        rd_channels = max(1, int(channels * rd_ratio))
        self.reduce = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.expand = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = F.relu(self.reduce(s))
        s = torch.sigmoid(self.expand(s))
        return x * s


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, groups: int
) -> nn.Sequential:
    """Conv (no bias) followed by BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class MobileOneBlock(nn.Module):
    """MobileOne building block.

    Training form: ``relu(se(bn_skip(x) + conv_bn_1x1(x) + sum_i conv_bn_kxk_i(x)))`` where the skip
    branch exists only if in == out and stride == 1, and the 1x1 "scale" branch only if k > 1.
    Deploy form (after :meth:`reparameterize`): ``relu(se(conv_kxk(x)))`` with a biased conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        use_se: bool = False,
        num_conv_branches: int = 1,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.groups = groups
        self.num_conv_branches = num_conv_branches

        self.se: nn.Module = SEBlock(out_channels) if use_se else nn.Identity()
        self.act = nn.ReLU()

        self.reparam_conv: nn.Conv2d | None
        self.rbr_skip: nn.BatchNorm2d | None
        self.rbr_scale: nn.Sequential | None
        self.rbr_conv: nn.ModuleList | None
        if inference_mode:
            self.reparam_conv = self._make_reparam_conv()
            self.rbr_skip = None
            self.rbr_scale = None
            self.rbr_conv = None
        else:
            self.reparam_conv = None
            self.rbr_skip = nn.BatchNorm2d(in_channels) if out_channels == in_channels and stride == 1 else None
            self.rbr_conv = nn.ModuleList(
                [
                    _conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups)
                    for _ in range(num_conv_branches)
                ]
            )
            self.rbr_scale = _conv_bn(in_channels, out_channels, 1, stride, 0, groups) if kernel_size > 1 else None

    @property
    def is_reparameterized(self) -> bool:
        """True once the block is in its single-conv deploy form."""
        return self.reparam_conv is not None

    def _make_reparam_conv(self) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            groups=self.groups,
            bias=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        assert self.rbr_conv is not None
        out = self.rbr_conv[0](x)
        for branch in self.rbr_conv[1:]:
            out = out + branch(x)
        if self.rbr_scale is not None:
            out = out + self.rbr_scale(x)
        if self.rbr_skip is not None:
            out = out + self.rbr_skip(x)
        return self.act(self.se(out))

    def _fuse_bn(self, branch: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (k x k kernel, bias) equivalent of a conv-BN branch or the skip BN."""
        k = self.kernel_size
        bn: nn.BatchNorm2d
        if isinstance(branch, nn.Sequential):  # conv-BN, as _conv_bn builds it
            conv, bn = cast(nn.Conv2d, branch[0]), cast(nn.BatchNorm2d, branch[1])
            kernel = conv.weight
            if kernel.shape[-1] < k:  # 1x1 scale branch: pad to k x k, centred
                p = (k - kernel.shape[-1]) // 2
                kernel = F.pad(kernel, [p, p, p, p])
        elif isinstance(branch, nn.BatchNorm2d):
            bn = branch
            in_per_group = self.in_channels // self.groups
            kernel = torch.zeros(self.in_channels, in_per_group, k, k, dtype=bn.weight.dtype, device=bn.weight.device)
            idx = torch.arange(self.in_channels, device=kernel.device)
            kernel[idx, idx % in_per_group, k // 2, k // 2] = 1.0
        else:
            raise TypeError(f"cannot fuse branch of type {type(branch).__name__}")
        assert bn.running_mean is not None and bn.running_var is not None
        std = (bn.running_var + bn.eps).sqrt()
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        t = (gamma / std).reshape(-1, 1, 1, 1)
        return kernel * t, beta - bn.running_mean * gamma / std

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse all training branches into one biased conv and delete them (idempotent)."""
        if self.reparam_conv is not None:
            return
        assert self.rbr_conv is not None
        branches: list[nn.Module] = list(self.rbr_conv)
        if self.rbr_scale is not None:
            branches.append(self.rbr_scale)
        if self.rbr_skip is not None:
            branches.append(self.rbr_skip)
        kernel = torch.zeros(0)
        bias = torch.zeros(0)
        for i, branch in enumerate(branches):
            k, b = self._fuse_bn(branch)
            kernel, bias = (k, b) if i == 0 else (kernel + k, bias + b)

        first = cast(nn.Sequential, self.rbr_conv[0])  # conv-BN
        ref = cast(nn.Conv2d, first[0]).weight
        conv = self._make_reparam_conv().to(device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(kernel)
        assert conv.bias is not None
        conv.bias.copy_(bias)

        del self.rbr_conv
        del self.rbr_scale
        del self.rbr_skip
        self.rbr_conv = None
        self.rbr_scale = None
        self.rbr_skip = None
        self.reparam_conv = conv


# variant -> width multipliers for the four stages, train-time conv branches, SE
MOBILEONE_CONFIGS: dict[str, dict[str, object]] = {
    "s0": {"width_multipliers": (0.75, 1.0, 1.0, 2.0), "num_conv_branches": 4, "use_se": False},
    "s1": {"width_multipliers": (1.5, 1.5, 2.0, 2.5), "num_conv_branches": 1, "use_se": False},
    "s2": {"width_multipliers": (1.5, 2.0, 2.5, 4.0), "num_conv_branches": 1, "use_se": False},
    "s3": {"width_multipliers": (2.0, 2.5, 3.0, 4.0), "num_conv_branches": 1, "use_se": False},
    "s4": {"width_multipliers": (3.0, 3.5, 3.5, 4.0), "num_conv_branches": 1, "use_se": True},
}


class MobileOne(nn.Module):
    """MobileOne classifier: stage0 (3x3/2) + four stages of dw3x3/pw1x1 block pairs, GAP, Linear."""

    def __init__(
        self,
        width_multipliers: tuple[float, float, float, float] = (0.75, 1.0, 1.0, 2.0),
        num_blocks_per_stage: tuple[int, int, int, int] = (2, 8, 10, 1),
        num_conv_branches: int = 1,
        use_se: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        assert len(width_multipliers) == 4 and len(num_blocks_per_stage) == 4
        self.num_conv_branches = num_conv_branches
        self.inference_mode = inference_mode

        self.in_planes = min(64, int(64 * width_multipliers[0]))
        self.stage0 = MobileOneBlock(in_chans, self.in_planes, 3, stride=2, padding=1, inference_mode=inference_mode)
        widths = [int(c * w) for c, w in zip((64, 128, 256, 512), width_multipliers)]
        se_blocks = (0, 0, 5, 1) if use_se else (0, 0, 0, 0)
        self.stage1 = self._make_stage(widths[0], num_blocks_per_stage[0], se_blocks[0])
        self.stage2 = self._make_stage(widths[1], num_blocks_per_stage[1], se_blocks[1])
        self.stage3 = self._make_stage(widths[2], num_blocks_per_stage[2], se_blocks[2])
        self.stage4 = self._make_stage(widths[3], num_blocks_per_stage[3], se_blocks[3])
        self.num_features = widths[3]
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)
        init_cnn_weights(self)

    def _make_stage(self, planes: int, num_blocks: int, num_se_blocks: int) -> nn.Sequential:
        blocks: list[nn.Module] = []
        for ix in range(num_blocks):
            stride = 2 if ix == 0 else 1
            use_se = ix >= num_blocks - num_se_blocks
            blocks.append(
                MobileOneBlock(
                    self.in_planes,
                    self.in_planes,
                    3,
                    stride=stride,
                    padding=1,
                    groups=self.in_planes,
                    use_se=use_se,
                    num_conv_branches=self.num_conv_branches,
                    inference_mode=self.inference_mode,
                )
            )
            blocks.append(
                MobileOneBlock(
                    self.in_planes,
                    planes,
                    1,
                    stride=1,
                    padding=0,
                    use_se=use_se,
                    num_conv_branches=self.num_conv_branches,
                    inference_mode=self.inference_mode,
                )
            )
            self.in_planes = planes
        return nn.Sequential(*blocks)

    @property
    def is_reparameterized(self) -> bool:
        """True when every MobileOneBlock is in deploy (single-conv) form."""
        return all(m.is_reparameterized for m in self.modules() if isinstance(m, MobileOneBlock))

    def reparameterize(self) -> MobileOne:
        """Reparameterize every block in place; returns self."""
        reparameterize_model(self)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone up to the last stage (N, C, H/32, W/32)."""
        x = self.stage0(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.stage4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.gap(x), 1)
        return self.linear(x)


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Reparameterize, in place, every MobileOneBlock found in `model`; returns `model`."""
    blocks = [m for m in model.modules() if isinstance(m, MobileOneBlock)]
    for block in blocks:
        block.reparameterize()
    return model


def mobileone(variant: str, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """Build MobileOne `variant` ("s0".."s4") in its train-time (over-parameterized) form."""
    key = variant.lower()
    if key not in MOBILEONE_CONFIGS:
        raise ValueError(f"unknown MobileOne variant {variant!r}; expected one of {sorted(MOBILEONE_CONFIGS)}")
    cfg = MOBILEONE_CONFIGS[key]
    return MobileOne(
        width_multipliers=cfg["width_multipliers"],  # type: ignore[arg-type]
        num_conv_branches=cfg["num_conv_branches"],  # type: ignore[arg-type]
        use_se=cfg["use_se"],  # type: ignore[arg-type]
        num_classes=num_classes,
        in_chans=in_chans,
    )


# -- the zoo: variants with their model cards (numbers: ../shared/reference/PAPERS.md) --------------------

_MOBILEONE = {
    "s0": Paper(2.1, 0.27, 71.4, 0.79, IPHONE12, "MobileOne, CVPR 2023"),
    "s1": Paper(4.8, 0.83, 75.9, 0.89, IPHONE12, "MobileOne, CVPR 2023"),
    "s2": Paper(7.8, 1.3, 77.4, 1.18, IPHONE12, "MobileOne, CVPR 2023"),
    "s3": Paper(10.1, 1.9, 78.1, 1.53, IPHONE12, "MobileOne, CVPR 2023"),
    "s4": Paper(14.8, 2.98, 79.4, 1.86, IPHONE12, "MobileOne, CVPR 2023"),
}

for v, paper in _MOBILEONE.items():
    register(
        ModelCard(f"mobileone_{v}", "mobileone", paper=paper, notes="reparameterized to its deploy form before export"),
        partial(mobileone, v),
    )
