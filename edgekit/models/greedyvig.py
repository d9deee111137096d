"""GreedyViG (Munir, Avery, Rahman, Marculescu, CVPR 2024): dynamic axial graph construction (DAGC).

Module names and shapes follow the official code, so the published checkpoints load as they are.
"""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
from torch import nn

from .layers import DistilledHeadMixin, Downsample, Stem, conv_bn, fold_scale_into_bn, max_relative, roll_h, roll_w
from .registry import ModelCard, Paper, register

# variant: ([inverted residual, DAGC] blocks per stage, widths, K per stage)
CONFIGS = {
    "s": ([[2, 2], [2, 2], [6, 2], [2, 2]], [48, 96, 192, 384], [8, 4, 2, 1]),
    "m": ([[3, 3], [3, 3], [9, 3], [3, 3]], [56, 112, 224, 448], [8, 4, 2, 1]),
    "b": ([[4, 4], [4, 4], [12, 4], [3, 3]], [64, 128, 256, 512], [8, 4, 2, 1]),
}
EMB_DIMS = 768


class DepthwiseSeparable(nn.Module):
    """pw1 + BN + GELU, depthwise 3x3 + BN + GELU, pw2 + BN (the official `dws`)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.norm2 = nn.BatchNorm2d(hidden)
        self.pw2 = nn.Conv2d(hidden, dim, 1)
        self.norm3 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pw1(x)))
        x = self.act(self.norm2(self.dw(x)))
        return self.norm3(self.pw2(x))


class InvertedResidual(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4, layer_scale_init: float = 1e-5):
        super().__init__()
        self.dws = DepthwiseSeparable(dim, dim * mlp_ratio)
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.scale_folded = False

    def fuse_for_deploy(self) -> None:
        fold_scale_into_bn(self.dws.norm3, self.layer_scale_2)
        self.scale_folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_folded:
            return x + self.dws(x)
        return x + self.layer_scale_2[:, None, None] * self.dws(x)


class ConditionalPositionEncoding(nn.Module):
    """x + depthwise 7x7 (with bias)."""

    def __init__(self, dim: int, kernel_size: int = 7):
        super().__init__()
        self.pe = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe(x)


class DynamicMRConv4d(nn.Module):
    """Max-relative aggregation over rolled copies, kept only where ||x - r||_1 < mean - std."""

    def __init__(self, in_chans: int, out_chans: int, K: int):
        super().__init__()
        self.nn = nn.Sequential(nn.Conv2d(in_chans * 2, out_chans, 1), nn.BatchNorm2d(out_chans), nn.GELU())
        self.K = K

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        rolled = [roll_h(x, i) for i in range(self.K, H, self.K)] + [roll_w(x, i) for i in range(self.K, W, self.K)]
        rel = []
        if rolled:
            half = roll_w(roll_h(x, H // 2), W // 2)
            d = (x - half).abs().sum(dim=1, keepdim=True)
            threshold = d.mean(dim=(2, 3), keepdim=True) - d.std(dim=(2, 3), keepdim=True)
            for r in rolled:
                diff = r - x
                rel.append(diff * (diff.abs().sum(dim=1, keepdim=True) < threshold).to(x.dtype))
        # The official loops also visit shift 0, where r - x is zero: max_relative's floor at zero covers it.
        return self.nn(torch.cat([x, max_relative(x, rel)], dim=1))


class Grapher(nn.Module):
    """CPE -> fc1 -> dynamic MRConv -> fc2 (the residual is the block's)."""

    def __init__(self, dim: int, K: int):
        super().__init__()
        self.cpe = ConditionalPositionEncoding(dim)
        self.fc1 = conv_bn(dim, dim)
        self.graph_conv = DynamicMRConv4d(dim, dim, K)
        self.fc2 = conv_bn(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.graph_conv(self.fc1(self.cpe(x))))


class DAGCBlock(nn.Module):
    """x + ls1 * Grapher(x), then x + ls2 * FFN(x)."""

    def __init__(self, dim: int, K: int, mlp_ratio: int = 4, layer_scale_init: float = 1e-5):
        super().__init__()
        self.mixer = Grapher(dim, K)
        hidden = dim * mlp_ratio
        self.ffn = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.BatchNorm2d(hidden), nn.GELU(), nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim)
        )
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.scale_folded = False

    def fuse_for_deploy(self) -> None:
        fold_scale_into_bn(cast(nn.BatchNorm2d, self.mixer.fc2[1]), self.layer_scale_1)
        fold_scale_into_bn(cast(nn.BatchNorm2d, self.ffn[4]), self.layer_scale_2)
        self.scale_folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_folded:
            x = x + self.mixer(x)
            return x + self.ffn(x)
        x = x + self.layer_scale_1[:, None, None] * self.mixer(x)
        return x + self.layer_scale_2[:, None, None] * self.ffn(x)


class GreedyViG(DistilledHeadMixin, nn.Module):
    def __init__(
        self,
        blocks: list[list[int]],
        channels: list[int],
        ks: list[int],
        emb_dims: int = EMB_DIMS,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = Stem(in_chans, channels[0])
        self.backbone = nn.ModuleList()
        for i, ((n_ir, n_dagc), dim, K) in enumerate(zip(blocks, channels, ks)):
            stage: list[nn.Module] = []
            if i > 0:
                stage.append(Downsample(channels[i - 1], dim))
            stage += [InvertedResidual(dim) for _ in range(n_ir)]
            stage += [DAGCBlock(dim, K) for _ in range(n_dagc)]
            self.backbone.append(nn.Sequential(*stage))
        self._build_head(channels[-1], emb_dims, num_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.backbone:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))


def greedyvig(variant: str, num_classes: int = 1000, in_chans: int = 3) -> GreedyViG:
    blocks, widths, ks = CONFIGS[variant]
    return GreedyViG(blocks, widths, ks, num_classes=num_classes, in_chans=in_chans)


# -- the zoo: variants with their model cards (numbers: ../shared/reference/PAPERS.md) --------------------

_GREEDYVIG = {
    "s": Paper(12.0, 1.6, 81.1, None, None, "GreedyViG, CVPR 2024"),
    "m": Paper(21.9, 3.2, 82.9, None, None, "GreedyViG, CVPR 2024"),
    "b": Paper(30.9, 5.2, 83.9, None, None, "GreedyViG, CVPR 2024"),
}

for v, paper in _GREEDYVIG.items():
    register(ModelCard(f"greedyvig_{v}", "greedyvig", paper=paper, official_names=True), partial(greedyvig, v))
