"""edgekit: take a vision model from a zoo or your own code to a phone, checked and measured.

In Python:

    import edgekit
    model = edgekit.create_model("mobilevig_ti", weights="mobilevig_ti.pth")
    result = edgekit.compile("mobilevig_ti", "tflite", out="out")
    edgekit.verify(result.artifact)
"""

from __future__ import annotations

# Bound before anything is imported: setuptools reads this literal, and the rooms that record the version
# (manifests, recipe runs) import it from here while this module is still importing them.
__version__ = "0.1.0"

# The functions are bound after their subpackages are imported: `edgekit.compile` and `edgekit.verify`
# name the functions, not the modules (the modules stay importable as `edgekit.compile.*`).
from . import compile as _compile_pkg  # noqa: E402, F401
from . import distill as _distill_pkg  # noqa: E402, F401
from . import prune as _prune_pkg  # noqa: E402, F401
from .compile import compile, verify  # noqa: E402
from .distill import distill, train  # noqa: E402
from .errors import EdgekitError  # noqa: E402
from .models import create_model, load_model  # noqa: E402
from .prune import prune  # noqa: E402
from .recipe import run as run_recipe  # noqa: E402

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
