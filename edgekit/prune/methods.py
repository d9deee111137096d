"""Pruning methods as plug-ins: one small interface, one registry.

A method is a `PruningMethod` registered under its name. `edgekit.prune()` (and `--budget-ms`, the
recipes, the CLI's help) only ever go through this registry, so adding a method is one module that
subclasses `PruningMethod` and calls `register_method`; nothing else branches on method names.

What a method provides:

- structured pruning by scores: `group_scores(net, groups)`, a score per channel of every group (higher
  is kept); channels are then ranked across groups by `magnitude_structured`;
- or structured pruning by training (`trains = True`): `train(net, groups, ratio, dataset, spec)`
  returns the kept channels per group and a log (reported under the method's name); such a method
  always prunes whole channel groups;
- unstructured pruning: `unstructured(net, ratio)` zeroes weights in place and returns the sparsity
  reached per `sparsity_unit` ("layer" or "module");
- `needs_data`: the API loads and checks the dataset before the (slower) graph analysis;
- `check(spec)`: its own option checks (e.g. OTO's optimizer), raising `EdgekitError`.

The built-in methods (oto, magnitude, dimap) register themselves from their own modules, imported by
`edgekit.prune`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import EdgekitError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data import Dataset
    from ..specs import PruneSpec
    from .graph import Group


class PruningMethod:
    """The interface of a pruning method. Subclass it, set `name`, override what the method does."""

    name: str = ""
    trains: bool = False  # chooses the kept channels by training (`train`), always structured
    needs_data: bool = False  # the API loads the dataset (and checks its classes) for it
    sparsity_unit: str = "layer"  # the unstructured report is `sparsity_per_<unit>`

    def check(self, spec: PruneSpec) -> None:
        """Reject options this method cannot use (raise `EdgekitError`); called before anything is loaded."""

    def group_scores(self, net: nn.Module, groups: list[Group]) -> dict[int, torch.Tensor]:
        """A score per channel of each group (by group id); the lowest-scoring channels are removed."""
        raise EdgekitError(f"pruning method '{self.name}' does not score channel groups")

    def unstructured(self, net: nn.Module, ratio: float) -> dict[str, float]:
        """Zero `ratio` of the prunable weights in place; the sparsity reached per layer or module."""
        raise EdgekitError(f"pruning method '{self.name}' removes whole channel groups only; pass --structured")

    def train(
        self, net: nn.Module, groups: list[Group], ratio: float, dataset: Dataset | None, spec: PruneSpec
    ) -> tuple[dict[int, list[int]], dict[str, Any]]:
        """Train `net` in place so `ratio` of the channels can go; (kept channels per group id, log).
        `dataset` is loaded for a method that `needs_data`, else None."""
        raise EdgekitError(f"pruning method '{self.name}' does not train")

    @property
    def scores_groups(self) -> bool:
        """Whether the method scores channel groups (overrides `group_scores`): `--budget-ms` needs that."""
        return type(self).group_scores is not PruningMethod.group_scores

    def __repr__(self) -> str:
        return f"<pruning method '{self.name}'>"


_METHODS: dict[str, PruningMethod] = {}


def register_method(method: PruningMethod, *, replace: bool = False) -> PruningMethod:
    """Make `method` available as `edgekit.prune(..., method.name, ...)`, `--method` and `prune.method`."""
    if not isinstance(method, PruningMethod):
        raise TypeError(f"register a PruningMethod instance, not {type(method).__name__}")
    if not method.name or not isinstance(method.name, str):
        raise ValueError("a pruning method needs a name")
    if method.name in _METHODS and not replace:
        raise ValueError(f"pruning method '{method.name}' is already registered")
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (a no-op when none has that name)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> PruningMethod:
    """The method registered as `name`; an unknown name is a user error listing the registered ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise EdgekitError(f"unknown pruning method '{name}'; choose one of: {', '.join(method_names())}") from None


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order (the built-ins: oto, magnitude, dimap)."""
    return tuple(_METHODS)
