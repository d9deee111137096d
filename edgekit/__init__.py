"""edgekit: take a vision model from a zoo or your own code to a phone, checked and measured.

In Python:

    import edgekit
    model = edgekit.create_model("mobilevig_ti", weights="mobilevig_ti.pth")
    result = edgekit.compile("mobilevig_ti", "tflite", out="out")
    edgekit.verify(result.artifact)
"""

from __future__ import annotations

# `edgekit.compile`, `edgekit.prune` and `edgekit.distill` name the functions, not the subpackages (which stay
# importable as `edgekit.compile.*`).
from .compile import compile, verify
from .distill import distill, train
from .errors import EdgekitError
from .models import create_model, load_model
from .prune import prune
from .recipe import run as run_recipe
from .version import __version__

__all__ = [
    "EdgekitError",
    "__version__",
    "compile",
    "create_model",
    "distill",
    "load_model",
    "prune",
    "run_recipe",
    "train",
    "verify",
]
