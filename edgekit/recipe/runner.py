"""Carrying out a plan: each step's stage called with its spec's fields, cached by key; run(), explain(), run.json."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..compile import compile as compile_model
from ..compile import get_target
from ..devices import Runtime, runtime
from ..distill import distill as distill_model
from ..distill import parse_features
from ..distill import train as train_model
from ..errors import EdgekitError, first_line
from ..io import sha256_of, write_json
from ..latency import LatencyDB, record
from ..models import trusted_code
from ..profile import profile as profile_artifact
from ..prune import prune as prune_model
from ..report import step_detail, write_run_report
from ..specs import DistillSpec, ProfileSpec, QuantizeSpec, TrainSpec
from ..version import __version__
from .cache import _artifacts_view, _cached, _clean_stale, _hash_outputs, _locked
from .loading import load_recipe
from .plan import CompileStep, DistillStep, Step, plan
from .schema import ModelSection, PruneSection, Recipe, RecipeError

__all__ = ["RUN_SCHEMA", "RunResult", "explain", "run"]

RUN_SCHEMA = "edgekit-run/1"
MODEL_STEPS = ("train", "prune", "distill")  # steps that write model.pt: a failure stops the run


@dataclass
class RunResult:
    out: Path
    manifest: dict

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.manifest["steps"] if s["status"] == "failed"]


class _Skip(Exception):
    """A step that cannot run here (e.g. Core ML on Linux); not a failure."""


def _train_options(s: TrainSpec) -> dict:
    """The training loop's options of a train or distill spec, as keywords of `train()` and `distill()`."""
    return {
        "epochs": s.epochs,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "weight_decay": s.weight_decay,
        "limit": s.limit,
        "device": s.device,
        "precision": s.precision,
        "workers": s.workers,
        "augment": s.augment,
        "accumulate": s.accumulate,
        "clip_grad": s.clip_grad,
        "ema": s.ema,
    }


def _training_summary(r: dict) -> dict:
    return {
        "val_accuracy_before": r["val_accuracy_before"],
        "val_accuracy": r["val_accuracy"],
        "epochs": r["epochs"],
        "data": r["data"].get("spec"),
        "train_images": r["data"].get("train"),
        "val_images": r["data"].get("val"),
    }


class _Runner:
    """Carries out the steps of a plan in `out`, each cached by key."""

    def __init__(
        self, out: Path, db, log: Callable[[str], None], status: Callable[[str], None], rt: Runtime | None = None
    ):
        self.out, self.db, self.log, self.status = out, db, log, status
        self.rt = rt or Runtime()  # under torchrun: training steps on every rank, the rest on rank 0
        self.cache = out / "cache"
        self.dirs: dict[str, Path] = {}
        self.results: dict[str, dict] = {}

    def source(self, step_name: str | None, model: ModelSection) -> dict:
        """The model a step starts from: `step_name`'s checkpoint, or (None) the recipe's model and weights."""
        if step_name:
            return {"model": str(self.dirs[step_name] / "model.pt"), "weights": None, "num_classes": None}
        return {"model": model.ref, "weights": model.weights, "num_classes": model.num_classes}

    # each returns the step's summary (JSON) after writing its outputs into `work`

    def _train_progress(self, step: Step):
        def advance(i: int, total: int, loss: float, rate: float = 0.0) -> None:
            self.status(f"{step.name}: step {i}/{total}, loss {loss:.3f}, {rate:.0f} img/s")

        return advance

    def train(self, step: Step[TrainSpec], work: Path) -> dict:
        assert step.model is not None and step.data is not None and step.seed is not None  # the plan sets them
        src = self.source(step.deps[0] if step.deps else None, step.model)
        r = train_model(
            src.pop("model"),
            step.data,
            out=work / "model.pt",
            **_train_options(step.spec),
            seed=step.seed,
            input_size=step.model.input_size,
            resume=(work / "model.pt").exists(),
            progress=self._train_progress(step),
            **src,
        )
        return _training_summary(r.report)

    def prune(self, step: Step[PruneSection], work: Path) -> dict:
        assert step.model is not None and step.data is not None  # the plan sets them
        s = step.spec
        src = self.source(step.deps[0] if step.deps else None, step.model)
        self.status(f"{step.name}: {s.method} {s.ratio:.0%}")
        r = prune_model(
            src.pop("model"),
            s.method,
            s.ratio,
            out=work / "model.pt",
            structured=s.structured,
            data=step.data,
            steps=s.steps,
            optimizer=s.optimizer,
            round_to=s.round_to,
            device=s.device,
            precision=s.precision,
            workers=s.workers,
            input_size=step.model.input_size,
            **src,
        ).report
        keys = (
            "method",
            "ratio",
            "structured",
            "before",
            "after",
            "channels_removed",
            "channels_total",
            "left_out",
            "prunable_sparsity",
        )
        out = {k: r[k] for k in keys if k in r}
        trained = r.get(r["method"])  # a method that trains files its log under its name
        if isinstance(trained, dict) and "val_accuracy_subnet" in trained:
            out["val_accuracy"] = trained["val_accuracy_subnet"]
        return out

    def distill(self, step: DistillStep, work: Path) -> dict:
        assert step.model is not None and step.data is not None and step.seed is not None  # the plan sets them
        s: DistillSpec = step.spec
        student = self.source(step.student_step, step.model)
        if s.teacher:
            teacher, teacher_weights = s.teacher, s.teacher_weights
        else:
            t = self.source(step.teacher_step, step.model)
            teacher, teacher_weights = t["model"], t["weights"]
        r = distill_model(
            student["model"],
            teacher,
            step.data,
            out=work / "model.pt",
            **_train_options(s),
            seed=step.seed,
            temperature=s.temperature,
            alpha=s.alpha,
            hard=s.hard,
            features=parse_features(s.features),
            teacher_weights=teacher_weights,
            weights=student["weights"],
            input_size=step.model.input_size,
            resume=(work / "model.pt").exists(),
            progress=self._train_progress(step),
        )
        return {**_training_summary(r.report), "teacher_val_accuracy": r.report.get("teacher_val_accuracy")}

    def compile(self, step: CompileStep, work: Path) -> dict:
        c, scheme, v = step.spec, step.scheme, step.verify
        q = step.quantize or QuantizeSpec()  # float: its defaults, unused
        assert step.model is not None  # the plan sets it
        src = self.source(step.deps[0] if step.deps else None, step.model)
        self.status(f"{step.name}: compiling for {c.target}" + (f" ({scheme})" if scheme else ""))
        r = compile_model(
            src.pop("model"),
            c.target,
            input_size=step.model.input_size,
            out=work,
            name=step.artifact,
            delegate=c.delegate,
            precision=c.precision,
            min_deployment_target=c.min_target,
            image_input=c.image_input,
            quantize=scheme,
            calib=step.data,
            calib_size=q.calib_size,
            float_layers=tuple(q.float_layers),
            max_drop=q.max_drop,
            val_samples=q.val_samples,
            verify=v.enabled,
            verify_samples=v.samples,
            **src,
        )
        man = r.manifest
        summary = {
            "artifact": r.artifact.name,
            "target": c.target,
            "sha256": man["sha256"],
            "bytes": man["bytes"],
            "verification": {
                k: man["verification"].get(k)
                for k in ("status", "summary", "reason")
                if man["verification"].get(k) is not None
            },
        }
        if "quantization" in man:
            summary["quantization"] = {"scheme": scheme, "accuracy": man["quantization"].get("accuracy")}
        if "delegation" in man:
            summary["delegation"] = man["delegation"].get("coverage")
        return summary

    def profile(self, step: Step[ProfileSpec], work: Path) -> dict:
        s = step.spec
        compiled = self.results[step.deps[0]]
        artifact = self.dirs[step.deps[0]] / compiled["artifact"]
        manifest = json.loads((artifact.parent / (artifact.name + ".json")).read_text())
        if s.device == "host":
            why = get_target(manifest["target"]).runnable(manifest)
            if why:
                raise _Skip(why)
        self.status(f"{step.name}: {s.runs} runs on {s.device}")
        report = profile_artifact(
            artifact, runs=s.runs, warmup=s.warmup, threads=s.threads, device=s.device, per_op=s.per_op, warn=self.log
        )
        write_json(work / "latency.json", report)
        if s.record:
            with LatencyDB(self.db) as db:
                record(report, db)
        return {
            k: report.get(k) for k in ("median_ms", "p90_ms", "iqr_ms", "threads", "runs", "load_ms", "peak_memory_mb")
        }

    def _trains(self, step: Step) -> bool:
        """A step every rank takes part in under torchrun: training, distillation, OTO."""
        return step.kind in ("train", "distill") or (step.kind == "prune" and step.spec.method == "oto")

    def _follow(self, step: Step, final: Path, go: bool) -> dict:
        """A rank other than 0: train in step with rank 0 (which writes), then wait for the step's directory."""
        if go and self._trains(step):
            self.rt.barrier()  # rank 0 has made the work directory
            getattr(self, step.kind)(step, final.with_name(final.name + ".work"))
        self.rt.barrier()  # rank 0 has moved the finished step into place
        self.dirs[step.name] = final
        return {"name": step.name, "kind": step.kind, "key": step.key, "status": "followed"}

    def run_step(self, step: Step) -> dict:
        final = self.cache / step.dirname
        info = _cached(final, step) if self.rt.main else None
        go = self.rt.agree(info is None)  # rank 0 decides whether the step runs
        if not self.rt.main:
            return self._follow(step, final, go)
        try:
            return self._run_step(step, final, info)
        finally:
            if self.rt.distributed:
                self.rt.barrier()

    def _run_step(self, step: Step, final: Path, info: dict | None) -> dict:
        entry = {
            "name": step.name,
            "kind": step.kind,
            "key": step.key,
            "dir": str(final.relative_to(self.out)),
            "deps": list(step.deps),
        }
        if info is not None:
            self.dirs[step.name], self.results[step.name] = final, info["summary"]
            return {**entry, "status": "cached", "seconds": 0.0, "outputs": info["outputs"], "summary": info["summary"]}
        work = final.with_name(final.name + ".work")
        if step.kind not in ("train", "distill") and work.exists():  # training resumes from its last epoch
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        if self.rt.distributed and self._trains(step):
            self.rt.barrier()  # the other ranks train into it with this one
        t0 = time.perf_counter()
        try:
            summary = getattr(self, step.kind)(step, work)
        except BaseException:
            if step.kind not in ("train", "distill"):  # nothing of a failed step is kept but a training checkpoint
                shutil.rmtree(work, ignore_errors=True)
            raise
        seconds = round(time.perf_counter() - t0, 2)
        outputs = _hash_outputs(work)
        write_json(
            work / "step.json",
            {
                "key": step.key,
                "name": step.name,
                "kind": step.kind,
                "params": step.params,
                "inputs": step.inputs,
                "deps": {d: self.dirs[d].name for d in step.deps},
                "outputs": outputs,
                "summary": summary,
                "seconds": seconds,
                "edgekit_version": __version__,
            },
        )
        if final.exists():  # an entry for this key whose outputs no longer hash as recorded
            shutil.rmtree(final)
        os.replace(work, final)
        self.dirs[step.name], self.results[step.name] = final, summary
        return {**entry, "status": "ran", "seconds": seconds, "outputs": outputs, "summary": summary}


def _training_device(recipe: Recipe) -> str:
    """The device the recipe's training steps ask for (the process group is made for it)."""
    for section in (recipe.train, recipe.distill, recipe.prune):
        if section is not None:
            return section.device
    return "auto"


def _typed_references(recipe: Recipe) -> set[str]:
    """The model references the recipe's author wrote (the model, a teacher): checkpoints the run writes from them
    name them as their base, and may run their code; a reference read from any other file may not."""
    refs = {recipe.model.ref}
    if recipe.distill is not None and recipe.distill.teacher:
        refs.add(recipe.distill.teacher)
    return refs


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
        "schema": RUN_SCHEMA,
        "edgekit_version": __version__,
        "status": "running",
        "started": started,
        "recipe": {
            "path": str(recipe_path),
            "sha256": sha256_of(recipe_path),
            "overrides": list(overrides or []),
            "resolved": recipe.model_dump(mode="json"),
        },
        "steps": entries,
    }
    # under torchrun: every rank trains, rank 0 alone runs the other steps and writes
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rt = runtime(_training_device(recipe)) if world > 1 else Runtime()
    if not rt.main:
        status = lambda s: None  # noqa: E731 - rank 0 reports
    with _locked(out) if rt.main else contextlib.nullcontext(), trusted_code(_typed_references(recipe)):
        if rt.main:
            _clean_stale(out / "cache")
        runner = _Runner(out, db, log, status, rt)
        failed: set[str] = set()
        try:
            for step in steps:
                blocked = [d for d in step.deps if d in failed]
                if blocked:
                    entries.append(
                        {
                            "name": step.name,
                            "kind": step.kind,
                            "key": step.key,
                            "status": "blocked",
                            "reason": f"{blocked[0]} did not finish",
                        }
                    )
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
                    if not isinstance(exc, EdgekitError) and step.kind in MODEL_STEPS:
                        entries.append(e)
                        raise
                entries.append(e)
                if rt.main:
                    log(_step_line(e))
            manifest["status"] = "failed" if failed else "complete"
        except BaseException:
            manifest["status"] = "failed" if failed else "interrupted"
            with contextlib.suppress(Exception):  # best effort: the original error is what the user needs
                if rt.main:
                    _finish(out, manifest, recipe, t0)
            raise
        if rt.main:
            _finish(out, manifest, recipe, t0)
    result = RunResult(out, manifest)
    if result.failed:
        f = result.failed[0]
        others = f" ({len(result.failed) - 1} more failed)" if len(result.failed) > 1 else ""
        done = sum(1 for s in entries if s["status"] in ("ran", "cached"))
        raise RecipeError(
            f"step {f['name']} failed: {f['error']}{others}; {done} of {len(steps)} steps finished, "
            f"see {out / 'run.json'}"
        )
    return result


def _finish(out: Path, manifest: dict, recipe: Recipe, t0: float) -> None:
    """The run's outputs beside the cache: artifacts/ (links), report.html and run.json (written last)."""
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["artifacts"] = _artifacts_view(out, manifest["steps"])
    if recipe.report:
        manifest["report"] = "report.html"
        write_run_report(out, manifest)
    write_json(out / "run.json", manifest)


def _step_line(e: dict) -> str:
    if e["status"] in ("failed", "skipped", "blocked"):
        return f"{e['status']:<8} {e['name']}: {step_detail(e)}"
    return f"{e['status']:<8} {e['name']:<20} {e['seconds']:6.1f} s  {step_detail(e)}"


def explain(recipe_path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None) -> list[dict]:
    """The plan without running it: each step, its key and whether `out` already holds it."""
    recipe, _ = load_recipe(recipe_path, overrides)
    out = Path(out) if out else Path("out") / recipe.name
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "key": s.key,
            "deps": list(s.deps),
            "cached": _cached(out / "cache" / s.dirname, s) is not None,
        }
        for s in plan(recipe)
    ]
