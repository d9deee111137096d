"""Does a network run at an input size? One forward, and where it fails, a line that says the size it runs at."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EdgekitError, first_line


class InputSizeError(EdgekitError):
    """The network cannot run at the input size asked for (a fixed-size layer, position embeddings...)."""


# the sizes tried, in this order, to say which one a network that fails at the asked size was built for
COMMON_SIZES = (224, 256, 192, 160, 128, 112, 96, 64, 32, 28, 16)
# what a network's forward raises at a size it was not built for (shape mismatches, timm's size asserts)
_SIZE_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError)


def _forward(model: nn.Module, size: int, in_chans: int):
    """One forward at batch 1, `size`² (evaluation mode, no gradients, the mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, in_chans, size, size))
    finally:
        model.train(was_training)


def _runs_at(model: nn.Module, size: int, in_chans: int) -> BaseException | None:
    """None if one forward at `size` works; else its error."""
    try:
        _forward(model, size, in_chans)
    except _SIZE_ERRORS as e:
        return e
    return None


def output_classes(model: nn.Module, size: int, in_chans: int = 3) -> int:
    """The class count a network outputs (the first output of one that returns several, e.g. a distillation head)."""
    out = _forward(model, size, in_chans)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return int(out.shape[-1])


def check_input_size(
    model: nn.Module, input_size: int, *, name: str | None = None, built_for: int | None = None, in_chans: int = 3
) -> None:
    """One forward at `input_size`; where it fails, an `InputSizeError` that says the size the network runs at.

    `built_for` is the size the model card gives (a zoo model's, a checkpoint's); where it is unknown or does
    not run either, the common sizes are tried.
    """
    error = _runs_at(model, input_size, in_chans)
    if error is None:
        return
    what = f"'{name}'" if name else "the network"
    detail = first_line(error) or type(error).__name__
    head = f"{what} does not run at input size {input_size} ({type(error).__name__}: {detail})"
    if built_for is not None and built_for != input_size and _runs_at(model, built_for, in_chans) is None:
        raise InputSizeError(f"{head}; it was built for {built_for}: give --input-size {built_for}")
    for size in COMMON_SIZES:
        if size not in (input_size, built_for) and _runs_at(model, size, in_chans) is None:
            raise InputSizeError(f"{head}; it runs at {size}: give --input-size {size}")
    raise InputSizeError(f"{head}; give --input-size the size it was built for")
