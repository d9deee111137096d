"""The plan: a recipe's steps in order, each with its stage's typed spec and a key over everything it depends on."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from ..compile import get_target
from ..data import DatasetError, find_source
from ..io import package_version, sha256_of
from ..models.registry import is_user_reference, model_card
from ..profile import host_name
from ..prune import get_method
from ..specs import DistillSpec, QuantizeSpec, Spec, VerifySpec
from ..version import __version__
from .schema import CompileEntry, ModelSection, Recipe, RecipeError

__all__ = ["CompileStep", "DistillStep", "Fingerprints", "Step", "plan", "tool_versions"]


# -- fingerprints: what a step reads, by content -----------------------------------------------------------------


class Fingerprints:
    """sha256 of the files steps read (each file hashed once per run)."""

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}

    def file(self, path: str | Path, key: str) -> str:
        p = Path(path)
        if not p.exists():
            raise RecipeError(f"{key}: '{path}' does not exist; fix the path in the recipe or with --set {key}=PATH")
        k = str(p.resolve())
        if k not in self._memo:
            self._memo[k] = sha256_of(p)
        return self._memo[k]

    def model(self, ref: str, key: str) -> dict:
        p = Path(ref)
        if p.suffix in (".pt", ".pth", ".ckpt") or p.is_file():
            return {"checkpoint": self.file(p, key)}
        if is_user_reference(ref):
            target, _, attr = ref.rpartition(":")
            if target.endswith(".py") or "/" in target:
                return {"source": self.file(target, key), "attr": attr}
            spec = importlib.util.find_spec(target.split(".")[0]) and importlib.util.find_spec(target)
            if spec is None or not spec.origin:
                raise RecipeError(f"{key}: cannot find module '{target}'; is it installed or on PYTHONPATH?")
            return {"source": self.file(spec.origin, key), "module": target, "attr": attr}
        model_card(ref)  # an unknown zoo name fails here, before anything runs
        return {"zoo": ref}

    def data(self, spec: str) -> dict:
        """What identifies the data (`Source.fingerprint`): file contents, or a listing for large image folders."""
        try:
            source, arg = find_source(spec)
            return source.fingerprint(arg, lambda f: self.file(f, "data"))
        except DatasetError as e:
            raise RecipeError(f"data: {e}") from None


def tool_versions(target: str) -> dict[str, str | None]:
    """The installed versions of the packages `target` runs on (part of its compile and profile keys)."""
    return {t: package_version(t) for t in get_target(target).packages}


# -- steps ---------------------------------------------------------------------------------------------------------

S = TypeVar("S", bound=Spec)
_NOT_PARAMS = {"name", "kind", "deps", "inputs", "key"}  # the key covers deps by their keys, inputs by content


@dataclass(kw_only=True)
class Step(Generic[S]):
    """One step of a plan: its stage's typed spec and what else its outputs depend on."""

    name: str  # train, prune, distill, compile-<id>, profile-<id>
    kind: str  # train, prune, distill, compile, profile
    spec: S  # the stage's options (TrainSpec, PruneSection, DistillSpec, CompileEntry, ProfileSpec)
    deps: tuple[str, ...] = ()  # the steps whose outputs it reads; the first holds the model it starts from
    model: ModelSection | None = None  # the recipe's model: what the step starts from when no step precedes it
    data: str | None = None  # the dataset spec, for steps that read data
    seed: int | None = None
    inputs: dict = field(default_factory=dict)  # fingerprints of files and tools it reads
    key: str = ""

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.key[:16]}"

    @property
    def params(self) -> dict:
        """Its parameters as JSON (in its key and its step.json): the spec and the fields besides it."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self) if f.name not in _NOT_PARAMS}


@dataclass(kw_only=True)
class DistillStep(Step[DistillSpec]):
    student_step: str | None = None  # the step whose model is the student (None: the recipe's model)
    teacher_step: str | None = None  # the teacher's step (None: spec.teacher, else the recipe's model)


@dataclass(kw_only=True)
class CompileStep(Step[CompileEntry]):
    artifact: str  # the artifact's name (without the target's suffix)
    scheme: str | None = None  # the quantization scheme (None: float)
    quantize: QuantizeSpec | None = None  # with a scheme: calibration and accuracy control
    verify: VerifySpec = field(default_factory=VerifySpec)


def _json(v):
    return v.model_dump(mode="json") if isinstance(v, BaseModel) else v


def _key(step: Step, upstream: dict[str, str]) -> str:
    blob = {"kind": step.kind, "params": step.params, "deps": upstream, "inputs": step.inputs}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


# -- the plan ------------------------------------------------------------------------------------------------------


def plan(recipe: Recipe, fp: Fingerprints | None = None) -> list[Step]:
    """The recipe's steps in order, each keyed by sha256 of its parameters, inputs and upstream keys."""
    fp = fp or Fingerprints()
    m = recipe.model
    base = {
        "model": fp.model(m.ref, "model.ref"),
        "weights": fp.file(m.weights, "model.weights") if m.weights else None,
    }
    uses_data = (
        recipe.train
        or recipe.distill
        or (recipe.prune and get_method(recipe.prune.method).needs_data)
        or any(recipe.scheme_for(c) for c in recipe.compile)
    )
    data = {"data": fp.data(recipe.data)} if uses_data else {}
    versions = {"edgekit": __version__, "torch": package_version("torch")}
    steps: list[Step] = []
    current: str | None = None  # the step whose model.pt is the model so far (None: the base reference)
    before_prune: str | None = None

    def add(step: Step) -> str:
        step.inputs = {**step.inputs, "versions": {**versions, **step.inputs.get("versions", {})}}
        step.key = _key(step, {d: next(s.key for s in steps if s.name == d) for d in step.deps})
        steps.append(step)
        return step.name

    def source() -> tuple[tuple[str, ...], dict]:
        return ((current,), {}) if current else ((), base)

    common: dict[str, Any] = {"model": m, "data": recipe.data, "seed": recipe.seed}
    if recipe.train:
        deps, ins = source()
        current = add(Step(name="train", kind="train", spec=recipe.train, deps=deps, inputs={**ins, **data}, **common))
    if recipe.prune:
        before_prune = current
        deps, ins = source()
        uses = data if get_method(recipe.prune.method).needs_data else {}
        current = add(Step(name="prune", kind="prune", spec=recipe.prune, deps=deps, inputs={**ins, **uses}, **common))
    if recipe.distill:
        d = recipe.distill
        teacher: dict = {}
        teacher_step = None
        if d.teacher:
            teacher = {
                "teacher": fp.model(d.teacher, "distill.teacher"),
                "teacher_weights": fp.file(d.teacher_weights, "distill.teacher_weights") if d.teacher_weights else None,
            }
        else:  # the model as it was before pruning (or, with no prune step, before this one)
            teacher_step = before_prune if recipe.prune else current
            teacher = {} if teacher_step else {"teacher": base}
        deps = tuple(dict.fromkeys(s for s in (current, teacher_step) if s))
        current = add(
            DistillStep(
                name="distill",
                kind="distill",
                spec=d,
                deps=deps,
                student_step=current,
                teacher_step=teacher_step,
                inputs={**({} if current else base), **data, **teacher},
                **common,
            )
        )
    quantize = recipe.quantize.spec() if recipe.quantize else QuantizeSpec()
    for c in recipe.compile:
        deps, ins = source()
        scheme = recipe.scheme_for(c)
        artifact = recipe.name if c.id in (None, c.target) else f"{recipe.name}-{c.id}"
        add(
            CompileStep(
                name=f"compile-{c.step_id}",
                kind="compile",
                spec=c,
                deps=deps,
                model=m,
                artifact=artifact,
                scheme=scheme,
                verify=recipe.verify,
                quantize=quantize if scheme else None,
                data=recipe.data if scheme else None,
                inputs={**ins, **(data if scheme else {}), "versions": tool_versions(c.target)},
            )
        )
    if recipe.profile:
        here = {"host": host_name(), "system": platform.system(), "cpus": os.cpu_count()}
        for c in recipe.compile:
            add(
                Step(
                    name=f"profile-{c.step_id}",
                    kind="profile",
                    spec=recipe.profile,
                    deps=(f"compile-{c.step_id}",),
                    inputs={"host": here, "versions": tool_versions(c.target)},
                )
            )
    return steps
