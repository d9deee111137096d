"""edgekit: take a vision model from a zoo or your own code to a phone, checked and measured."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import EdgekitError  # noqa: E402


def create_model(*args, **kwargs):
    """Build a zoo model (optionally with `weights=PATH`) in evaluation mode; see `edgekit.models.create_model`."""
    from .models import create_model as _create

    return _create(*args, **kwargs)


def compile(*args, **kwargs):  # noqa: A001
    """Compile a model for a target and verify it; see `edgekit.compile.compile`."""
    from .compile import compile as _compile

    return _compile(*args, **kwargs)


def verify(*args, **kwargs):
    """Check a compiled artifact against PyTorch; see `edgekit.verify.verify`."""
    from .verify import verify as _verify

    return _verify(*args, **kwargs)


__all__ = ["EdgekitError", "__version__", "compile", "create_model", "verify"]
