"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from .layers import init_cnn_weights
from .registry import IPHONE13, ModelCard, Paper, register

__all__ = ["MOBILENETV2_SETTINGS", "make_divisible", "ConvBNReLU6", "InvertedResidual", "MobileNetV2", "mobilenetv2"]

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
MOBILENETV2_SETTINGS: Sequence[Sequence[int]] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `v` to the nearest multiple of `divisor`, never going below 90% of `v` (or `min_value`)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when t == 1), depthwise 3x3, linear 1x1 projection; residual when shapes match."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        assert stride in (1, 2)
        hidden = int(round(in_chans * expand_ratio))
        self.use_res_connect = stride == 1 and in_chans == out_chans
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_chans, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, kernel_size=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_chans, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_chans),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier: stem conv3x3/2, inverted-residual stages, conv1x1 to last channel, GAP, dropout,
    Linear."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.2,
        round_nearest: int = 8,
        settings: Sequence[Sequence[int]] = MOBILENETV2_SETTINGS,
    ) -> None:
        super().__init__()
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        self.num_features = self.last_channel

        features: list[nn.Module] = [ConvBNReLU6(in_chans, input_channel, kernel_size=3, stride=2)]
        for t, c, n, s in settings:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        init_cnn_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output (N, last_channel, H/32, W/32)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def mobilenetv2(width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """Build MobileNetV2 with channel width multiplier `width_mult`."""
    return MobileNetV2(width_mult=width_mult, num_classes=num_classes, in_chans=in_chans)


# -- the zoo: variants with their model cards (numbers: ../shared/reference/PAPERS.md) --------------------

_MOBILENETV2 = {
    "100": (1.0, Paper(3.5, 0.3, 71.8, 0.81, IPHONE13, "MobileNetV2, CVPR 2018; latency from MobileViG")),
    "140": (1.4, Paper(6.9, 0.59, 74.7, 1.02, IPHONE13, "MobileNetV2, CVPR 2018; latency from MobileViG")),
}

for v, (width, paper) in _MOBILENETV2.items():
    register(ModelCard(f"mobilenetv2_{v}", "mobilenetv2", paper=paper), partial(mobilenetv2, width))
