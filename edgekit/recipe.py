"""Recipes: one YAML file names a model and the stages it goes through; `edgekit run` carries it out.

    model -> train -> prune -> distill -> compile (one step per target, quantized as `quantize` says, verified)
          -> profile (one step per target that runs here) -> report

Every step's output is cached under `RUN/cache/<step>-<key>/`, where the key is the sha256 of everything the
step depends on: its parameters, the keys of the steps it reads, the contents of the files it reads (weights,
checkpoints, datasets) and the versions of edgekit, torch and the target's tools. A re-run finds finished steps
by key and skips them; a changed parameter changes the key of its step and of every step downstream, and only
those run. A step works in `<dir>.work/` and is renamed into place only when complete, so an interrupted run
leaves no corrupt entry (an interrupted training step resumes from its last finished epoch). One target's
failure is recorded and the other targets go on. `RUN/run.json` holds the resolved recipe and every step's
key, status and output sha256; `RUN/artifacts/` links this run's outputs; `RUN/report.html` is the report.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import platform
import shutil
import time
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import __version__
from .errors import EdgekitError, first_line
from .io import atomic_path, sha256_of, write_json

RUN_SCHEMA = "edgekit-run/1"
Target = Literal["coreml", "tflite", "executorch", "onnx"]
DATA_HELP = "digits, fashion-mnist[:DIR] or imagefolder:DIR"


class RecipeError(EdgekitError):
    """A recipe that does not parse or validate, or a run that could not finish."""


# -- schema ------------------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Section):
    ref: str = Field(description="zoo name, path/to/file.py:Class, package.module:factory or an edgekit checkpoint")
    weights: Optional[str] = None
    num_classes: Optional[int] = Field(None, ge=1)
    input_size: Optional[int] = Field(None, ge=8, le=1024)


class TrainSpec(_Section):
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.05, ge=0)
    limit: Optional[int] = Field(None, ge=1, description="train on a seeded subset of this many images")


class PruneSpec(_Section):
    method: Literal["oto", "magnitude", "dimap"]
    ratio: float = Field(gt=0, lt=1)
    structured: bool = False
    steps: int = Field(200, ge=1, description="oto: training steps")
    optimizer: Literal["hesso", "dhspg"] = "hesso"


class DistillSpec(TrainSpec):
    teacher: Optional[str] = Field(None, description="default: the model as it was before pruning")
    teacher_weights: Optional[str] = None
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    hard: bool = False
    features: list[str] = []


class QuantizeSpec(_Section):
    schemes: dict[Target, str] = Field(default_factory=dict, description="scheme per target; a target not named stays float")
    calib_size: int = Field(256, ge=32)
    val_samples: int = Field(1000, ge=1)
    max_drop: Optional[float] = Field(None, ge=0)
    float_layers: list[str] = []


class CompileSpec(_Section):
    target: Target
    id: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="needed when a target appears twice")
    delegate: Optional[Literal["xnnpack", "coreml", "none"]] = None
    precision: Literal["fp16", "fp32"] = "fp16"
    min_target: str = "iOS16"
    image_input: bool = False
    quantize: Optional[str] = Field(None, description="this entry's scheme, over quantize.schemes; 'none' for float")

    @property
    def step_id(self) -> str:
        return self.id or self.target


class VerifySpec(_Section):
    enabled: bool = True
    samples: int = Field(4, ge=1)


class ProfileSpec(_Section):
    runs: int = Field(50, ge=1)
    warmup: int = Field(10, ge=0)
    threads: Optional[int] = Field(None, ge=1)
    device: str = "host"
    per_op: bool = False
    record: bool = Field(True, description="record the reports in the latency database")


class Recipe(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    model: ModelSpec
    data: str = Field("digits", description=DATA_HELP)
    train: Optional[TrainSpec] = None
    prune: Optional[PruneSpec] = None
    distill: Optional[DistillSpec] = None
    quantize: Optional[QuantizeSpec] = None
    compile: list[CompileSpec] = []
    verify: VerifySpec = VerifySpec()
    profile: Optional[ProfileSpec] = None
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
        from .quantize import SCHEMES

        seen: set[str] = set()
        for i, c in enumerate(self.compile):
            if c.step_id in seen:
                raise _LocatedError(("compile", i, "id"), f"'{c.step_id}' appears twice; give each entry an id")
            seen.add(c.step_id)
            if c.quantize not in (None, "none") and c.quantize not in SCHEMES[c.target]:
                raise _LocatedError(("compile", i, "quantize"), f"{c.target} has no scheme '{c.quantize}' "
                          f"(choose from: {', '.join(SCHEMES[c.target])}, none)")
        for t, s in (self.quantize.schemes if self.quantize else {}).items():
            if s not in SCHEMES[t]:
                raise _LocatedError(("quantize", "schemes", t), f"{t} has no scheme '{s}' (choose from: {', '.join(SCHEMES[t])})")
        if self.distill and not self.distill.teacher and not (self.prune or self.train):
            raise _LocatedError(("distill", "teacher"), "give a teacher: with no prune or train step before it the student "
                      "would be its own teacher")
        if self.profile and not self.compile:
            raise _LocatedError(("profile",), "there is nothing to profile: name targets under `compile`")
        return self

    def scheme_for(self, c: CompileSpec) -> str | None:
        s = c.quantize if c.quantize is not None else (self.quantize.schemes.get(c.target) if self.quantize else None)
        return None if s == "none" else s


class _LocatedError(ValueError):
    """A cross-field check's error, with the key it is about (pydantic gives model validators no location)."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc = loc


# -- loading: YAML with line numbers, --set overrides, one-line errors -------------------------------------------


def _yaml_value(text: str):
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`key.sub=value` (value read as YAML: 0.3, true, [onnx, tflite], null) set into the raw recipe."""
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RecipeError(f"--set '{item}': give KEY=VALUE, e.g. --set prune.ratio=0.3")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            nxt = _child(node, part)
            if nxt is None or not isinstance(nxt, (dict, list)):
                nxt = {}
                _assign(node, part, nxt, item)
            node = nxt
        _assign(node, parts[-1], _yaml_value(value), item)
    return raw


def _child(node, part: str):
    if isinstance(node, list):
        return node[int(part)] if part.isdigit() and int(part) < len(node) else None
    return node.get(part) if isinstance(node, dict) else None


def _assign(node, part: str, value, item: str) -> None:
    if isinstance(node, list):
        if not (part.isdigit() and int(part) < len(node)):
            raise RecipeError(f"--set '{item}': '{part}' is not an index of that list (it has {len(node)} entries)")
        node[int(part)] = value
    else:
        node[part] = value


def _line_of(root, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its nearest parent present in the file)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if hit is None:
                break
            node, line = hit[1], hit[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fields_at(loc: tuple) -> list[str]:
    """The keys the schema allows at `loc` (for 'did you mean')."""
    cls = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(str(part))
        if info is None:
            return []
        ann = info.annotation
        for arg in (ann, *typing.get_args(ann), *[a for x in typing.get_args(ann) for a in typing.get_args(x)]):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
                break
        else:
            return []
    return list(cls.model_fields)


def _describe(err: dict) -> tuple[tuple, str]:
    loc = tuple(err.get("loc", ()))
    ctx = err.get("ctx") or {}
    if isinstance(ctx.get("error"), _LocatedError):
        return ctx["error"].loc, str(ctx["error"])
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; allowed: {', '.join(_fields_at(loc[:-1]))}"
        return loc, f"unknown key{hint}"
    if err["type"] == "missing":
        return loc, "missing (required)"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return loc, msg


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict]:
    """Read and validate a recipe; errors name the file, line and key. Returns the recipe and its raw dict."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe '{path}' does not exist; give a YAML file such as recipes/quickstart.yaml")
    text = path.read_text()
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or first_line(e)})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name:, model:, compile: ...), not {type(raw).__name__}")
    overrides = list(overrides or [])
    raw = apply_overrides(raw, overrides)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")  # a typo explains a "missing"
        loc, msg = _describe(errors[0])
        key = ".".join(str(p) for p in loc) or "(top level)"
        set_by = next((o for o in reversed(overrides)
                       if (key + ".").startswith(o.partition("=")[0].strip() + ".")), None)
        where = f"--set {set_by}" if set_by else f"{path}:{_line_of(root, loc)}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(f"{where}: {key}: {msg}{more}") from None
    return recipe, raw


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
        from .models.registry import is_user_reference, model_card

        p = Path(ref)
        if p.suffix in (".pt", ".pth", ".ckpt") or p.is_file():
            return {"checkpoint": self.file(p, key)}
        if is_user_reference(ref):
            target, _, attr = ref.rpartition(":")
            if target.endswith(".py") or "/" in target:
                return {"source": self.file(target, key), "attr": attr}
            import importlib.util

            spec = importlib.util.find_spec(target.split(".")[0]) and importlib.util.find_spec(target)
            if spec is None or not spec.origin:
                raise RecipeError(f"{key}: cannot find module '{target}'; is it installed or on PYTHONPATH?")
            return {"source": self.file(spec.origin, key), "module": target, "attr": attr}
        model_card(ref)  # an unknown zoo name fails here, before anything runs
        return {"zoo": ref}

    def data(self, spec: str) -> dict:
        kind, _, arg = spec.partition(":")
        if kind == "digits" and not arg:
            return {"digits": _version("scikit-learn")}
        if kind == "fashion-mnist":
            from .data import FASHION_MNIST_DIR

            root = Path(arg) if arg else FASHION_MNIST_DIR
            if not root.is_dir():
                raise RecipeError(f"data: '{root}' does not exist; install dataset-fashion-mnist or give "
                                  "fashion-mnist:DIR")
            return {"files": {f.name: self.file(f, "data") for f in sorted(root.iterdir()) if f.is_file()}}
        if kind == "imagefolder" and arg:
            root = Path(arg)
            if not root.is_dir():
                raise RecipeError(f"data: image folder '{root}' does not exist; give imagefolder:DIR with "
                                  "DIR/<class>/<image> (--set data=imagefolder:DIR)")
            h = hashlib.sha256()  # names, sizes and times: hashing every image of ImageNet would take minutes
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            return {"listing": h.hexdigest()}
        raise RecipeError(f"data: unknown dataset '{spec}'; use one of: {DATA_HELP}")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


TOOLS = {"coreml": ("coremltools",), "tflite": ("litert-torch", "ai-edge-litert"), "executorch": ("executorch",),
         "onnx": ("onnx", "onnxruntime", "onnxslim")}


# -- the plan: steps and their keys ------------------------------------------------------------------------------


@dataclass
class Step:
    name: str  # train, prune, distill, compile-<id>, profile-<id>
    kind: str
    params: dict
    deps: tuple[str, ...] = ()
    inputs: dict = field(default_factory=dict)  # fingerprints of files and tools it reads
    key: str = ""

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.key[:16]}"


def plan(recipe: Recipe, fp: Fingerprints | None = None) -> list[Step]:
    """The recipe's steps in order, each keyed by sha256 of its parameters, inputs and upstream keys."""
    fp = fp or Fingerprints()
    m = recipe.model
    base = {"model": fp.model(m.ref, "model.ref"), "weights": fp.file(m.weights, "model.weights") if m.weights else None}
    uses_data = recipe.train or recipe.distill or (recipe.prune and recipe.prune.method == "oto") or any(
        recipe.scheme_for(c) for c in recipe.compile)
    data = {"data": fp.data(recipe.data)} if uses_data else {}
    versions = {"edgekit": __version__, "torch": _version("torch")}
    steps: list[Step] = []
    current: str | None = None  # the step whose model.pt is the model so far (None: the base reference)
    before_prune: str | None = None

    def add(step: Step) -> Step:
        step.inputs = {**step.inputs, "versions": {**versions, **step.inputs.get("versions", {})}}
        upstream = {d: next(s.key for s in steps if s.name == d) for d in step.deps}
        blob = {"kind": step.kind, "params": step.params, "deps": upstream, "inputs": step.inputs}
        step.key = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
        steps.append(step)
        return step

    def source() -> tuple[tuple[str, ...], dict]:
        return ((current,), {}) if current else ((), base)

    common = {"model": m.model_dump(), "data": recipe.data, "seed": recipe.seed}
    if recipe.train:
        deps, ins = source()
        current = add(Step("train", "train", {**common, **recipe.train.model_dump()}, deps, {**ins, **data})).name
    if recipe.prune:
        before_prune = current
        deps, ins = source()
        p = recipe.prune.model_dump()
        uses = data if recipe.prune.method == "oto" else {}
        current = add(Step("prune", "prune", {**common, **p}, deps, {**ins, **uses})).name
    if recipe.distill:
        d = recipe.distill
        teacher: dict = {}
        teacher_step = None
        if d.teacher:
            teacher = {"teacher": fp.model(d.teacher, "distill.teacher"),
                       "teacher_weights": fp.file(d.teacher_weights, "distill.teacher_weights")
                       if d.teacher_weights else None}
        else:  # the model as it was before pruning (or, with no prune step, before this one)
            teacher_step = before_prune if recipe.prune else current
            teacher = {} if teacher_step else {"teacher": base}
        deps = tuple(dict.fromkeys(s for s in (current, teacher_step) if s))
        params = {**common, **d.model_dump(), "student_step": current, "teacher_step": teacher_step}
        current = add(Step("distill", "distill", params, deps, {**({} if current else base), **data, **teacher})).name
    verify = recipe.verify.model_dump()
    q = recipe.quantize.model_dump(exclude={"schemes"}) if recipe.quantize else QuantizeSpec().model_dump(exclude={"schemes"})
    for c in recipe.compile:
        deps, ins = source()
        scheme = recipe.scheme_for(c)
        params = {"name": recipe.name, "model": m.model_dump(), **c.model_dump(), "scheme": scheme, "verify": verify,
                  **({"quantize": q, "data": recipe.data} if scheme else {})}
        tools = {t: _version(t) for t in TOOLS[c.target]}
        add(Step(f"compile-{c.step_id}", "compile", params, deps, {**ins, **(data if scheme else {}),
                                                                   "versions": tools}))
    if recipe.profile:
        from .profile import host_name

        here = {"host": host_name(), "system": platform.system(), "cpus": os.cpu_count()}
        for c in recipe.compile:
            tools = {t: _version(t) for t in TOOLS[c.target]}
            add(Step(f"profile-{c.step_id}", "profile", {**recipe.profile.model_dump()}, (f"compile-{c.step_id}",),
                     {"host": here, "versions": tools}))
    return steps


# -- running -----------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    out: Path
    manifest: dict

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.manifest["steps"] if s["status"] == "failed"]


def _hash_outputs(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_of(p) for p in sorted(d.iterdir()) if p.name != "step.json"}


def _cached(final: Path, step: Step) -> dict | None:
    """The step.json of a finished entry for this key whose outputs still hash as recorded, else None."""
    meta = final / "step.json"
    if not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("key") != step.key or _hash_outputs(final) != info.get("outputs"):
        return None
    return info


@contextlib.contextmanager
def _locked(out: Path):
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecipeError(f"another `edgekit run` is writing to '{out}'; wait for it or give another --out") from None
        yield


class _Runner:
    """Carries out the steps of a plan in `out`, each cached by key."""

    def __init__(self, recipe: Recipe, out: Path, db, log: Callable[[str], None], status: Callable[[str], None]):
        self.recipe, self.out, self.db, self.log, self.status = recipe, out, db, log, status
        self.cache = out / "cache"
        self.dirs: dict[str, Path] = {}
        self.results: dict[str, dict] = {}

    def source(self, step_name: str | None) -> dict:
        """The model a step starts from: `step_name`'s checkpoint, or (None) the recipe's model and weights."""
        m = self.recipe.model
        if step_name:
            return {"model": str(self.dirs[step_name] / "model.pt"), "weights": None, "num_classes": None}
        return {"model": m.ref, "weights": m.weights, "num_classes": m.num_classes}

    # each returns the step's summary (JSON) after writing its outputs into `work`

    def _train_progress(self, step: Step):
        def advance(i: int, total: int, loss: float) -> None:
            self.status(f"{step.name}: step {i}/{total}, loss {loss:.3f}")
        return advance

    def train(self, step: Step, work: Path) -> dict:
        from .distill import train

        p = step.params
        src = self.source(step.deps[0] if step.deps else None)
        r = train(src.pop("model"), p["data"], out=work / "model.pt", epochs=p["epochs"], lr=p["lr"],
                  batch_size=p["batch_size"], weight_decay=p["weight_decay"], seed=p["seed"],
                  input_size=self.recipe.model.input_size, limit=p["limit"], resume=(work / "model.pt").exists(),
                  progress=self._train_progress(step), **src)
        return _training_summary(r.report)

    def prune(self, step: Step, work: Path) -> dict:
        from .prune import prune

        p = step.params
        src = self.source(step.deps[0] if step.deps else None)
        self.status(f"{step.name}: {p['method']} {p['ratio']:.0%}")
        r = prune(src.pop("model"), p["method"], p["ratio"], out=work / "model.pt", structured=p["structured"],
                  data=p["data"], steps=p["steps"], optimizer=p["optimizer"], input_size=self.recipe.model.input_size,
                  **src).report
        keys = ("method", "ratio", "structured", "before", "after", "channels_removed", "channels_total",
                "prunable_sparsity")
        out = {k: r[k] for k in keys if k in r}
        if "oto" in r:
            out["val_accuracy"] = r["oto"]["val_accuracy_subnet"]
        return out

    def distill(self, step: Step, work: Path) -> dict:
        from .distill import distill, parse_features

        p = step.params
        student = self.source(p["student_step"])
        if p["teacher"]:
            teacher, teacher_weights = p["teacher"], p["teacher_weights"]
        else:
            t = self.source(p["teacher_step"])
            teacher, teacher_weights = t["model"], t["weights"]
        r = distill(student["model"], teacher, p["data"], out=work / "model.pt", epochs=p["epochs"], lr=p["lr"],
                    batch_size=p["batch_size"], weight_decay=p["weight_decay"], seed=p["seed"],
                    temperature=p["temperature"], alpha=p["alpha"], hard=p["hard"],
                    features=parse_features(p["features"]), teacher_weights=teacher_weights,
                    weights=student["weights"], input_size=self.recipe.model.input_size, limit=p["limit"],
                    resume=(work / "model.pt").exists(), progress=self._train_progress(step))
        return {**_training_summary(r.report), "teacher_val_accuracy": r.report.get("teacher_val_accuracy")}

    def compile(self, step: Step, work: Path) -> dict:
        from .compile import compile as compile_model

        p = step.params
        src = self.source(step.deps[0] if step.deps else None)
        q = p.get("quantize") or {}
        scheme = p["scheme"]
        self.status(f"{step.name}: compiling for {p['target']}" + (f" ({scheme})" if scheme else ""))
        name = p["name"] if p["id"] in (None, p["target"]) else f"{p['name']}-{p['id']}"
        r = compile_model(src.pop("model"), p["target"], input_size=self.recipe.model.input_size, out=work, name=name,
                          delegate=p["delegate"], precision=p["precision"], min_deployment_target=p["min_target"],
                          image_input=p["image_input"], quantize=scheme, calib=p.get("data") if scheme else None,
                          calib_size=q.get("calib_size", 256), float_layers=tuple(q.get("float_layers") or ()),
                          max_drop=q.get("max_drop"), val_samples=q.get("val_samples", 1000),
                          verify=p["verify"]["enabled"], verify_samples=p["verify"]["samples"], **src)
        man = r.manifest
        summary = {"artifact": r.artifact.name, "target": p["target"], "sha256": man["sha256"], "bytes": man["bytes"],
                   "verification": {k: man["verification"].get(k) for k in ("status", "summary", "reason")
                                    if man["verification"].get(k) is not None}}
        if "quantization" in man:
            summary["quantization"] = {"scheme": scheme, "accuracy": man["quantization"].get("accuracy")}
        if "delegation" in man:
            summary["delegation"] = man["delegation"].get("coverage")
        return summary

    def profile(self, step: Step, work: Path) -> dict:
        from .compile import get_backend
        from .profile import profile

        p = step.params
        compiled = self.results[step.deps[0]]
        artifact = self.dirs[step.deps[0]] / compiled["artifact"]
        manifest = json.loads((artifact.parent / (artifact.name + ".json")).read_text())
        if p["device"] == "host":
            why = get_backend(manifest["target"]).runnable(manifest)
            if why:
                raise _Skip(why)
        self.status(f"{step.name}: {p['runs']} runs on {p['device']}")
        report = profile(artifact, runs=p["runs"], warmup=p["warmup"], threads=p["threads"], device=p["device"],
                         per_op=p["per_op"], warn=self.log)
        write_json(work / "latency.json", report)
        if p["record"]:
            from .latency import LatencyDB, record

            with LatencyDB(self.db) as db:
                record(report, db)
        return {k: report.get(k) for k in ("median_ms", "p90_ms", "iqr_ms", "threads", "runs", "load_ms",
                                            "peak_memory_mb")}

    def run_step(self, step: Step) -> dict:
        final = self.cache / step.dirname
        entry = {"name": step.name, "kind": step.kind, "key": step.key, "dir": str(final.relative_to(self.out)),
                 "deps": list(step.deps)}
        info = _cached(final, step)
        if info is not None:
            self.dirs[step.name], self.results[step.name] = final, info["summary"]
            return {**entry, "status": "cached", "seconds": 0.0, "outputs": info["outputs"], "summary": info["summary"]}
        work = final.with_name(final.name + ".work")
        if step.kind not in ("train", "distill") and work.exists():  # training resumes from its last epoch
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            summary = getattr(self, step.kind)(step, work)
        except BaseException:
            if step.kind not in ("train", "distill"):  # nothing of a failed step is kept but a training checkpoint
                shutil.rmtree(work, ignore_errors=True)
            raise
        seconds = round(time.perf_counter() - t0, 2)
        outputs = _hash_outputs(work)
        write_json(work / "step.json", {"key": step.key, "name": step.name, "kind": step.kind, "params": step.params,
                                        "inputs": step.inputs, "deps": {d: self.dirs[d].name for d in step.deps},
                                        "outputs": outputs, "summary": summary, "seconds": seconds,
                                        "edgekit_version": __version__})
        if final.exists():  # an entry for this key whose outputs no longer hash as recorded
            shutil.rmtree(final)
        os.replace(work, final)
        self.dirs[step.name], self.results[step.name] = final, summary
        return {**entry, "status": "ran", "seconds": seconds, "outputs": outputs, "summary": summary}


class _Skip(Exception):
    """A step that cannot run here (e.g. Core ML on Linux); not a failure."""


def _training_summary(r: dict) -> dict:
    return {"val_accuracy_before": r["val_accuracy_before"], "val_accuracy": r["val_accuracy"],
            "epochs": r["epochs"], "data": r["data"].get("spec"), "train_images": r["data"].get("train"),
            "val_images": r["data"].get("val")}


def _clean_stale(cache: Path) -> None:
    """Remove what a killed run left: temporary files of atomic writes (work dirs of training steps are kept)."""
    if cache.is_dir():
        for p in cache.glob(".*.partial-*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) `src` to `dst`: no extra space, survives moving the run folder."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _artifacts_view(out: Path, steps: list[dict]) -> list[dict]:
    """Rebuild RUN/artifacts/ with this run's outputs: the final checkpoint, artifacts, manifests, latency reports."""
    listed = []
    summaries = {s["name"]: s.get("summary") for s in steps}
    with atomic_path(out / "artifacts") as tmp:
        tmp.mkdir()
        model_steps = [s for s in steps if s["kind"] in ("train", "prune", "distill") and s["status"] in ("ran", "cached")]
        if model_steps:
            last = model_steps[-1]
            _link_tree(out / last["dir"] / "model.pt", tmp / "model.pt")
            listed.append({"kind": "checkpoint", "step": last["name"], "path": "artifacts/model.pt",
                           "sha256": last["outputs"]["model.pt"]})
        for s in steps:
            if s["status"] not in ("ran", "cached") or s["kind"] not in ("compile", "profile"):
                continue
            for rel, sha in s["outputs"].items():  # a latency report is named after its artifact
                name = rel if s["kind"] == "compile" else f"{summaries[s['deps'][0]]['artifact']}.{rel}"
                _link_tree(out / s["dir"] / rel, tmp / name)
                if s["kind"] == "profile":
                    kind = "latency_report"
                else:
                    kind = "manifest" if rel.endswith(".json") else "artifact"
                listed.append({"kind": kind, "step": s["name"], "path": f"artifacts/{name}", "sha256": sha})
    return listed


def run(
    recipe_path: str | Path,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    db: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> RunResult:
    """Carry out a recipe in `out` (default out/<name>): cached steps are skipped; returns the run manifest.

    A failed target is recorded and the others go on; a failed model step (train, prune, distill) stops the
    run. Either way run.json and the report are written, and RecipeError is raised at the end.
    """
    log, status = log or (lambda s: None), status or (lambda s: None)
    recipe, _ = load_recipe(recipe_path, overrides)
    out = Path(out) if out else Path("out") / recipe.name
    steps = plan(recipe)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    entries: list[dict] = []
    manifest = {
        "schema": RUN_SCHEMA, "edgekit_version": __version__, "status": "running", "started": started,
        "recipe": {"path": str(recipe_path), "sha256": sha256_of(recipe_path), "overrides": list(overrides or []),
                   "resolved": recipe.model_dump(mode="json")},
        "steps": entries,
    }
    with _locked(out):
        _clean_stale(out / "cache")
        runner = _Runner(recipe, out, db, log, status)
        failed: set[str] = set()
        try:
            for step in steps:
                blocked = [d for d in step.deps if d in failed]
                if blocked:
                    entries.append({"name": step.name, "kind": step.kind, "key": step.key, "status": "blocked",
                                    "reason": f"{blocked[0]} did not finish"})
                    failed.add(step.name)
                    log(_step_line(entries[-1]))
                    continue
                status(f"{step.name}…")
                try:
                    e = runner.run_step(step)
                except _Skip as why:
                    e = {"name": step.name, "kind": step.kind, "key": step.key, "status": "skipped", "reason": str(why)}
                except Exception as exc:  # noqa: BLE001 - recorded; a model step's failure is raised below
                    msg = str(exc) if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {first_line(exc)}"
                    e = {"name": step.name, "kind": step.kind, "key": step.key, "status": "failed", "error": msg}
                    failed.add(step.name)
                    if not isinstance(exc, EdgekitError) and step.kind in ("train", "prune", "distill"):
                        entries.append(e)
                        raise
                entries.append(e)
                log(_step_line(e))
            manifest["status"] = "failed" if failed else "complete"
        except BaseException:
            manifest["status"] = "failed" if failed else "interrupted"
            with contextlib.suppress(Exception):  # best effort: the original error is what the user needs
                _finish(out, manifest, recipe, t0)
            raise
        _finish(out, manifest, recipe, t0)
    result = RunResult(out, manifest)
    if result.failed:
        f = result.failed[0]
        others = f" ({len(result.failed) - 1} more failed)" if len(result.failed) > 1 else ""
        done = sum(1 for s in entries if s["status"] in ("ran", "cached"))
        raise RecipeError(f"step {f['name']} failed: {f['error']}{others}; {done} of {len(steps)} steps finished, "
                          f"see {out / 'run.json'}")
    return result


def _finish(out: Path, manifest: dict, recipe: Recipe, t0: float) -> None:
    """The run's outputs beside the cache: artifacts/ (links), report.html and run.json (written last)."""
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["artifacts"] = _artifacts_view(out, manifest["steps"])
    if recipe.report:
        from .report import write_run_report

        manifest["report"] = "report.html"
        write_run_report(out, manifest)
    write_json(out / "run.json", manifest)


def _step_line(e: dict) -> str:
    from .report import step_detail

    if e["status"] in ("failed", "skipped", "blocked"):
        return f"{e['status']:<8} {e['name']}: {step_detail(e)}"
    return f"{e['status']:<8} {e['name']:<20} {e['seconds']:6.1f} s  {step_detail(e)}"


def explain(recipe_path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None) -> list[dict]:
    """The plan without running it: each step, its key and whether `out` already holds it."""
    recipe, _ = load_recipe(recipe_path, overrides)
    out = Path(out) if out else Path("out") / recipe.name
    return [{"name": s.name, "kind": s.kind, "key": s.key, "deps": list(s.deps),
             "cached": _cached(out / "cache" / s.dirname, s) is not None} for s in plan(recipe)]

