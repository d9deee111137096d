"""Registers every zoo family with its model card. Numbers: ../shared/reference/PAPERS.md."""

from __future__ import annotations

from functools import partial

from .greedyvig import greedyvig
from .mobilenetv2 import mobilenetv2
from .mobileone import mobileone
from .mobilevig import mobilevig
from .registry import ModelCard, Paper, register

IPHONE13 = "iPhone 13 mini NPU, Core ML"
IPHONE12 = "iPhone 12, Core ML"

_MOBILEVIG = {
    "ti": Paper(5.2, 0.7, 75.7, 0.78, IPHONE13, "MobileViG, CVPRW 2023"),
    "s": Paper(7.2, 1.0, 78.2, None, None, "MobileViG, CVPRW 2023"),
    "m": Paper(14.0, 1.5, 80.6, None, None, "MobileViG, CVPRW 2023"),
    "b": Paper(26.7, 2.8, 82.6, 2.30, IPHONE13, "MobileViG, CVPRW 2023"),
}
_GREEDYVIG = {
    "s": Paper(12.0, 1.6, 81.1, None, None, "GreedyViG, CVPR 2024"),
    "m": Paper(21.9, 3.2, 82.9, None, None, "GreedyViG, CVPR 2024"),
    "b": Paper(30.9, 5.2, 83.9, None, None, "GreedyViG, CVPR 2024"),
}
_MOBILEONE = {
    "s0": Paper(2.1, 0.27, 71.4, 0.79, IPHONE12, "MobileOne, CVPR 2023"),
    "s1": Paper(4.8, 0.83, 75.9, 0.89, IPHONE12, "MobileOne, CVPR 2023"),
    "s2": Paper(7.8, 1.3, 77.4, 1.18, IPHONE12, "MobileOne, CVPR 2023"),
    "s3": Paper(10.1, 1.9, 78.1, 1.53, IPHONE12, "MobileOne, CVPR 2023"),
    "s4": Paper(14.8, 2.98, 79.4, 1.86, IPHONE12, "MobileOne, CVPR 2023"),
}
_MOBILENETV2 = {
    "100": (1.0, Paper(3.5, 0.3, 71.8, 0.81, IPHONE13, "MobileNetV2, CVPR 2018; latency from MobileViG")),
    "140": (1.4, Paper(6.9, 0.59, 74.7, 1.02, IPHONE13, "MobileNetV2, CVPR 2018; latency from MobileViG")),
}

_VIG_NOTE = "paper params leave out BatchNorm and include the distillation head"

for v, paper in _MOBILEVIG.items():
    register(
        ModelCard(f"mobilevig_{v}", "mobilevig", paper=paper, official_names=True, notes=_VIG_NOTE),
        partial(mobilevig, v),
    )
for v, paper in _GREEDYVIG.items():
    register(ModelCard(f"greedyvig_{v}", "greedyvig", paper=paper, official_names=True), partial(greedyvig, v))
for v, paper in _MOBILEONE.items():
    register(
        ModelCard(f"mobileone_{v}", "mobileone", paper=paper, notes="reparameterized to its deploy form before export"),
        partial(mobileone, v),
    )
for v, (width, paper) in _MOBILENETV2.items():
    register(ModelCard(f"mobilenetv2_{v}", "mobilenetv2", paper=paper), partial(mobilenetv2, width))
