"""The recipe schema: its sections are the stages' specs (`edgekit.specs`), plus the fields only a recipe has."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..compile import PRECISIONS, delegate_names, get_target, target_names
from ..data import data_help
from ..errors import EdgekitError
from ..prune import method_names
from ..prune.oto import OPTIMIZERS
from ..specs import (
    DEFAULT_DATA,
    DEFAULT_SEED,
    MAX_CLASSES,
    MAX_INPUT,
    MIN_INPUT,
    CompileSpec,
    DistillSpec,
    ProfileSpec,
    PruneSpec,
    QuantizeSpec,
    TrainSpec,
    VerifySpec,
)

__all__ = [
    "CompileEntry",
    "ModelSection",
    "PlainName",
    "PruneSection",
    "QuantizeSection",
    "Recipe",
    "RecipeError",
    "Target",
]


T = TypeVar("T")


class RecipeError(EdgekitError):
    """A recipe that does not parse or validate, or a run that could not finish."""


class _LocatedError(ValueError):
    """A cross-field check's error, with the key it is about (pydantic gives model validators no location)."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc = loc


# -- names that become parts of paths ---------------------------------------------------------------------------


def _plain_name(v: str) -> str:
    """A name that is one path component: out/<name>, an artifact's name, a step's folder."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", v) or not v.strip("."):
        raise ValueError(
            "must be a plain name (letters, digits, '-', '_' and '.', not only dots): it names a folder or file"
        )
    return v


PlainName = Annotated[str, AfterValidator(_plain_name)]


# -- what depends on the target: the target registry answers ------------------------------------------------------


def _registered_target(v: str) -> str:
    return _one_of(v, target_names())


Target = Annotated[str, AfterValidator(_registered_target)]


def target_schemes(target: str) -> tuple[str, ...]:
    """The quantization schemes `target` offers."""
    return get_target(target).scheme_names()


# -- sections ------------------------------------------------------------------------------------------------------


def _one_of(value: T, choices: Sequence[T]) -> T:
    """`value` if it is one of `choices`, else pydantic's own message for a Literal."""
    if value not in choices:
        names = [repr(c) for c in choices]
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"Input should be {listed}")
    return value


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(description="zoo name, path/to/file.py:Class, package.module:factory or an edgekit checkpoint")
    weights: str | None = None
    num_classes: int | None = Field(None, ge=1, le=MAX_CLASSES)
    input_size: int | None = Field(None, ge=MIN_INPUT, le=MAX_INPUT)


class PruneSection(PruneSpec):
    """`prune:` - the method is checked against the registered pruning methods."""

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str) -> str:
        return _one_of(v, method_names())

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        return _one_of(v, OPTIMIZERS)


class QuantizeSection(QuantizeSpec):
    """`quantize:` - the stage's options and the scheme per target."""

    schemes: dict[Target, str] = Field(
        default_factory=dict, description="scheme per target; a target not named stays float"
    )

    def spec(self) -> QuantizeSpec:
        """The options a compile step reads (not the schemes: another target's scheme is not its business)."""
        return QuantizeSpec.model_validate(self.model_dump(exclude={"schemes"}))


class CompileEntry(CompileSpec):
    """An entry of `compile:` - a target, the compile options and this entry's scheme."""

    target: Target
    id: PlainName | None = Field(None, description="needed when a target appears twice")
    quantize: str | None = Field(None, description="this entry's scheme, over quantize.schemes; 'none' for float")

    @field_validator("delegate")
    @classmethod
    def _delegate(cls, v: str | None) -> str | None:
        if v is not None and not delegate_names():
            raise ValueError("no registered target takes a delegate")
        return v if v is None else _one_of(v, delegate_names())

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        return _one_of(v, PRECISIONS)

    @property
    def step_id(self) -> str:
        return self.id or self.target


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PlainName = Field(description="the run's name: out/<name> and its artifacts' names")
    description: str = ""
    seed: int = DEFAULT_SEED
    model: ModelSection
    data: str = Field(DEFAULT_DATA, description=data_help())
    train: TrainSpec | None = None
    prune: PruneSection | None = None
    distill: DistillSpec | None = None
    quantize: QuantizeSection | None = None
    compile: list[CompileEntry] = []
    verify: VerifySpec = VerifySpec()
    profile: ProfileSpec | None = None
    report: bool = True

    @field_validator("model", mode="before")
    @classmethod
    def _model_short(cls, v):
        return {"ref": v} if isinstance(v, str) else v

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_short(cls, v):
        if isinstance(v, (str, dict)):
            v = [v]
        return [{"target": x} if isinstance(x, str) else x for x in (v or [])]

    @model_validator(mode="after")
    def _consistent(self):
        seen: set[str] = set()
        for i, c in enumerate(self.compile):
            if c.step_id in seen:
                raise _LocatedError(("compile", i, "id"), f"'{c.step_id}' appears twice; give each entry an id")
            seen.add(c.step_id)
            schemes = target_schemes(c.target)
            if c.quantize not in (None, "none") and c.quantize not in schemes:
                raise _LocatedError(
                    ("compile", i, "quantize"),
                    f"{c.target} has no scheme '{c.quantize}' (choose from: {', '.join(schemes)}, none)",
                )
        for t, s in (self.quantize.schemes if self.quantize else {}).items():
            if s not in target_schemes(t):
                raise _LocatedError(
                    ("quantize", "schemes", t), f"{t} has no scheme '{s}' (choose from: {', '.join(target_schemes(t))})"
                )
        if self.distill and not self.distill.teacher and not (self.prune or self.train):
            raise _LocatedError(
                ("distill", "teacher"),
                "give a teacher: with no prune or train step before it the student would be its own teacher",
            )
        if self.profile and not self.compile:
            raise _LocatedError(("profile",), "there is nothing to profile: name targets under `compile`")
        return self

    def scheme_for(self, c: CompileEntry) -> str | None:
        s = c.quantize if c.quantize is not None else (self.quantize.schemes.get(c.target) if self.quantize else None)
        return None if s == "none" else s
