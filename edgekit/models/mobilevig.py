"""MobileViG (Munir, Avery, Marculescu, CVPRW 2023): inverted residual stages, then SVGA graph blocks.

Module names and shapes follow the official code, so the published checkpoints load as they are.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .layers import DistilledHeadMixin, Downsample, Stem, conv_bn, fold_scale_into_bn, max_relative, roll_h, roll_w
from .registry import IPHONE13, ModelCard, Paper, register

# variant: (blocks stages 1-3, widths stages 1-3, stage-4 blocks, stage-4 width, embedding)
CONFIGS = {
    "ti": ([2, 2, 6], [42, 84, 168], 2, 256, 512),
    "s": ([3, 3, 9], [42, 84, 176], 3, 256, 512),
    "m": ([3, 3, 9], [42, 84, 224], 3, 400, 768),
    "b": ([5, 5, 15], [42, 84, 240], 5, 464, 768),
}


class MLP(nn.Module):
    """1x1 expand + BN + GELU, depthwise 3x3 + BN + GELU, 1x1 project + BN."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.mid = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.mid_norm = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))


class InvertedResidual(nn.Module):
    """x + layer_scale * MLP(x)."""

    def __init__(self, dim: int, mlp_ratio: int = 4, layer_scale_init: float = 1e-5):
        super().__init__()
        self.mlp = MLP(dim, dim * mlp_ratio)
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim, 1, 1))
        self.scale_folded = False

    def fuse_for_deploy(self) -> None:
        """Fold the layer scale into the last BatchNorm (exact algebra; one elementwise op less)."""
        fold_scale_into_bn(self.mlp.norm2, self.layer_scale_2)
        self.scale_folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_folded:
            return x + self.mlp(x)
        return x + self.layer_scale_2 * self.mlp(x)


class MRConv4d(nn.Module):
    """Sparse Vision Graph Attention: max-relative features over rolled copies every K pixels."""

    def __init__(self, in_chans: int, out_chans: int, K: int = 2):
        super().__init__()
        self.nn = nn.Sequential(nn.Conv2d(in_chans * 2, out_chans, 1), nn.BatchNorm2d(out_chans), nn.GELU())
        self.K = K

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        rel = [x - roll_h(x, i) for i in range(self.K, H, self.K)]
        rel += [x - roll_w(x, i) for i in range(self.K, W, self.K)]
        return self.nn(torch.cat([x, max_relative(x, rel)], dim=1))


class Grapher(nn.Module):
    """x + fc2(MRConv(fc1(x)))."""

    def __init__(self, dim: int, K: int = 2):
        super().__init__()
        self.fc1 = conv_bn(dim, dim)
        self.graph_conv = MRConv4d(dim, dim * 2, K)
        self.fc2 = conv_bn(dim * 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.graph_conv(self.fc1(x)))


class FFN(nn.Module):
    """x + BN(1x1(GELU(BN(1x1(x)))))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = conv_bn(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = conv_bn(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class MobileViG(DistilledHeadMixin, nn.Module):
    def __init__(
        self,
        local_blocks: list[int],
        local_channels: list[int],
        global_blocks: int,
        channels: int,
        emb_dims: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        K: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = Stem(in_chans, local_channels[0])
        self.local_backbone = nn.ModuleList()
        for i, n in enumerate(local_blocks):
            if i > 0:
                self.local_backbone.append(Downsample(local_channels[i - 1], local_channels[i]))
            for _ in range(n):
                self.local_backbone.append(InvertedResidual(local_channels[i]))
        self.local_backbone.append(Downsample(local_channels[-1], channels))
        self.backbone = nn.ModuleList(
            nn.Sequential(Grapher(channels, K), FFN(channels, channels * 4)) for _ in range(global_blocks)
        )
        self._build_head(channels, emb_dims, num_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.local_backbone:
            x = block(x)
        for block in self.backbone:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))


def mobilevig(variant: str, num_classes: int = 1000, in_chans: int = 3) -> MobileViG:
    blocks, widths, gblocks, gwidth, emb = CONFIGS[variant]
    return MobileViG(blocks, widths, gblocks, gwidth, emb, num_classes=num_classes, in_chans=in_chans)


# -- the zoo: variants with their model cards (numbers: ../shared/reference/PAPERS.md) --------------------

_MOBILEVIG = {
    "ti": Paper(5.2, 0.7, 75.7, 0.78, IPHONE13, "MobileViG, CVPRW 2023"),
    "s": Paper(7.2, 1.0, 78.2, None, None, "MobileViG, CVPRW 2023"),
    "m": Paper(14.0, 1.5, 80.6, None, None, "MobileViG, CVPRW 2023"),
    "b": Paper(26.7, 2.8, 82.6, 2.30, IPHONE13, "MobileViG, CVPRW 2023"),
}
_VIG_NOTE = "paper params leave out BatchNorm and include the distillation head"

for v, paper in _MOBILEVIG.items():
    register(
        ModelCard(f"mobilevig_{v}", "mobilevig", paper=paper, official_names=True, notes=_VIG_NOTE),
        partial(mobilevig, v),
    )
