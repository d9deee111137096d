"""Blocks shared by MobileViG and GreedyViG, named as in the official code so checkpoints load as they are."""

from __future__ import annotations

import torch
from torch import nn


class Stem(nn.Module):
    """conv3x3/2 (in -> out/2) BN GELU, conv3x3/2 (out/2 -> out) BN GELU."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, out_chans // 2, 3, 2, 1),
            nn.BatchNorm2d(out_chans // 2),
            nn.GELU(),
            nn.Conv2d(out_chans // 2, out_chans, 3, 2, 1),
            nn.BatchNorm2d(out_chans),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class Downsample(nn.Module):
    """conv3x3/2 + BN, no activation."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, 2, 1), nn.BatchNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def conv_bn(in_chans: int, out_chans: int) -> nn.Sequential:
    """1x1 conv + BN (the official `fc1` / `fc2` of the graph blocks)."""
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 1), nn.BatchNorm2d(out_chans))


def init_cnn_weights(model: nn.Module) -> None:
    """Kaiming (fan-out) convolutions, unit BatchNorm, N(0, 0.01) linear heads: the usual CNN start."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def roll_h(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Roll along H by `shift`, written as the official code writes it (slices concatenated on H)."""
    return torch.cat([x[:, :, -shift:, :], x[:, :, :-shift, :]], dim=2)


def roll_w(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Roll along W by `shift` (slices concatenated on W)."""
    return torch.cat([x[:, :, :, -shift:], x[:, :, :, :-shift]], dim=3)


def max_relative(x: torch.Tensor, rel: list[torch.Tensor]) -> torch.Tensor:
    """max(0, rel_1, rel_2, ...): the official loops start x_j at zero and take running maxima.

    Written as relu(max(...)) rather than max(zeros_like(x), ...) so that every op lowers to the
    delegates (ExecuTorch's XNNPACK partitioner leaves `full_like` on the portable runtime and splits the
    graph there).
    """
    if not rel:
        return torch.zeros_like(x)
    out = rel[0]
    for r in rel[1:]:
        out = torch.maximum(out, r)
    return torch.relu(out)


@torch.no_grad()
def fold_scale_into_bn(bn: nn.BatchNorm2d, scale: torch.Tensor) -> None:
    """scale * BN(y) == BN'(y) with BN' affine weight and bias multiplied by the per-channel scale."""
    s = scale.detach().reshape(-1)
    bn.weight.mul_(s)
    bn.bias.mul_(s)


class DistilledHeadMixin:
    """Pool, 1x1 conv to the embedding width + BN + GELU, then `head` and `dist_head` (1x1 convs).

    The modules sit on the model itself (`prediction`, `head`, `dist_head`) to keep the official names.
    Training returns both heads' logits; evaluation returns their mean, as the official code does.
    """

    # what the nn.Module it is mixed into holds
    training: bool
    prediction: nn.Sequential
    head: nn.Conv2d
    dist_head: nn.Conv2d

    def _build_head(self, in_chans: int, emb_dims: int, num_classes: int, dropout: float) -> None:
        self.prediction = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_chans, emb_dims, 1),
            nn.BatchNorm2d(emb_dims),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Conv2d(emb_dims, num_classes, 1)
        self.dist_head = nn.Conv2d(emb_dims, num_classes, 1)

    heads_fused = False

    @torch.no_grad()
    def fuse_heads(self) -> None:
        """Evaluation returns (head + dist_head) / 2: one 1x1 conv with the averaged weights computes it."""
        self.head.weight.copy_((self.head.weight + self.dist_head.weight) / 2)
        assert self.head.bias is not None and self.dist_head.bias is not None  # both built with a bias
        self.head.bias.copy_((self.head.bias + self.dist_head.bias) / 2)
        del self.dist_head
        self.heads_fused = True

    def forward_head(self, x: torch.Tensor):
        x = self.prediction(x)
        if self.heads_fused:
            return self.head(x).flatten(1)
        cls = self.head(x).flatten(1)
        dist = self.dist_head(x).flatten(1)
        if self.training:
            return cls, dist
        return (cls + dist) / 2
