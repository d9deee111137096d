"""The zoo: every model by name, with its model card (input size, preprocessing, the papers' numbers)."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# where the papers measured their latency
IPHONE13 = "iPhone 13 mini NPU, Core ML"
IPHONE12 = "iPhone 12, Core ML"


@dataclass(frozen=True)
class Paper:
    """Numbers as the paper / official repository gives them (ImageNet-1K)."""

    params_m: float | None = None
    gmacs: float | None = None
    top1: float | None = None
    latency_ms: float | None = None
    latency_where: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    paper: Paper = field(default_factory=Paper)
    official_names: bool = False  # module names follow the official code (published checkpoints load)
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ZooEntry:
    card: ModelCard
    factory: Callable[..., nn.Module]  # factory(num_classes=..., in_chans=...)


_ZOO: dict[str, ZooEntry] = {}


def register(card: ModelCard, factory: Callable[..., nn.Module]) -> None:
    _ZOO[card.name] = ZooEntry(card, factory)


def list_models() -> list[str]:
    return sorted(_ZOO)


def _lookup(name: str) -> ZooEntry:
    if name not in _ZOO:
        near = difflib.get_close_matches(name, list(_ZOO), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known models: {', '.join(list_models())}"
        raise UnknownModelError(f"unknown model '{name}'{hint} (see `edgekit zoo list`)")
    return _ZOO[name]


def model_card(name: str) -> ModelCard:
    return _lookup(name).card


def is_user_reference(ref: str) -> bool:
    """`path/to/file.py:ClassName` or `package.module:factory`."""
    return ":" in ref and not ref.startswith(("http://", "https://"))


# Model references read from files (a checkpoint's `base`, a manifest's model) are data: one that names Python
# code runs that code when built, so it is refused unless the caller trusts it (`--trust-code`). A reference the
# user typed (`edgekit compile my_net.py:Net`) is theirs and runs (the README says so); once it has run, a
# checkpoint that names it may rebuild it in the same context (a Python session, one CLI command).
_TRUSTED: ContextVar[bool | frozenset[str]] = ContextVar("edgekit_trusted_code", default=frozenset())


@contextlib.contextmanager
def trusted_code(refs: bool | Iterable[str] = True) -> Iterator[None]:
    """Within the block, let references read from files run code: all of them (True), or those in `refs`."""
    current = _TRUSTED.get()
    value: bool | frozenset[str] = current
    if refs is True or isinstance(current, bool):
        value = True if refs is True else current
    elif not isinstance(refs, bool):
        value = current | frozenset(refs)
    token = _TRUSTED.set(value)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def trust_all_code() -> None:
    """`--trust-code`: every reference read from a file may run code, for the rest of the current context."""
    _TRUSTED.set(True)


def reset_trusted_code() -> None:
    """Trust nothing read from files (the start of each CLI command)."""
    _TRUSTED.set(frozenset())


def _ran(ref: str) -> None:
    """`ref` was built at the user's own request (its code has run here): checkpoints naming it may rebuild it."""
    current = _TRUSTED.get()
    if not isinstance(current, bool):
        _TRUSTED.set(current | {ref})


def check_trusted(ref: str, source: str) -> None:
    """Refuse a reference read from `source` (a file) that would run Python code, unless it is trusted."""
    if not is_user_reference(ref):
        return
    trusted = _TRUSTED.get()
    if trusted is True or (not isinstance(trusted, bool) and ref in trusted):
        return
    raise UnknownModelError(
        f"{source} names Python code as its model ('{ref}'), which loading it would run; "
        "pass --trust-code if you trust that code (edgekit.models.trusted_code() in Python)"
    )


def _load_user_object(ref: str):
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise UnknownModelError(f"bad model reference '{ref}'; use path/to/file.py:ClassName or package.module:factory")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise UnknownModelError(f"model file '{target}' does not exist; give path/to/file.py:ClassName")
        mod_name = f"edgekit_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:  # not a Python source file (no loader for its suffix)
            raise UnknownModelError(f"model file '{target}' is not a Python file; give path/to/file.py:ClassName")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file itself is broken
            sys.modules.pop(mod_name, None)
            raise UnknownModelError(f"could not import '{target}': {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise UnknownModelError(f"could not import module '{target}': {e}") from None
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        near = difflib.get_close_matches(attr, names, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UnknownModelError(f"'{target}' has no '{attr}'{hint}")
    return getattr(module, attr)


INIT_SEED = 0


def seeded_init(fn: Callable[[], nn.Module]) -> nn.Module:
    """Build with the global RNG seeded (and restored after): a model built twice without weights is the
    same model, so an artifact can be verified later against its reference alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return fn()


def build_user_model(ref: str) -> nn.Module:
    """Import and build the user's own reference (a file they named, so its code runs); see `check_trusted`."""
    obj = _load_user_object(ref)
    _ran(ref)
    try:
        model = seeded_init(obj)
    except Exception as e:
        raise UnknownModelError(f"'{ref}' could not be built with no arguments: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UnknownModelError(f"'{ref}' did not give a torch.nn.Module (got {type(model).__name__})")
    return model


def build_zoo_model(name: str, num_classes: int | None = None, in_chans: int = 3) -> nn.Module:
    entry = _lookup(name)
    return seeded_init(lambda: entry.factory(num_classes=num_classes or entry.card.num_classes, in_chans=in_chans))
