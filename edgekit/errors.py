"""Errors a user can cause. The CLI prints their message on one line and exits 2."""

from __future__ import annotations


def first_line(text: object, limit: int = 200) -> str:
    """The first non-empty line of a (converter's, loader's) message, cut to `limit` characters."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else ""


class EdgekitError(Exception):
    """Base class of every error that is the user's to fix (bad name, bad file, bad option)."""

    exit_code = 2


class UnknownModelError(EdgekitError):
    pass


class UnknownTargetError(EdgekitError):
    pass


class WeightsError(EdgekitError):
    """A weights file that is missing, corrupt, unsafe or does not fit the model."""


class UnsupportedOperatorError(EdgekitError):
    """An operator the target cannot lower."""

    def __init__(self, target: str, operator: str, detail: str = ""):
        self.target = target
        self.operator = operator
        msg = f"target '{target}' cannot lower operator '{operator}'"
        if detail:
            msg += f" ({detail})"
        msg += "; replace it in the model or choose another target"
        super().__init__(msg)


class VerificationError(EdgekitError):
    """The compiled artifact does not compute what the PyTorch model computes."""


class ArtifactError(EdgekitError):
    """An artifact that is missing or unreadable."""
