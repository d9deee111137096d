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

The package, one concern a module: `schema` (the sections: the stages' specs from `edgekit.specs`, plus what
only a recipe has), `loading` (YAML with line numbers, --set, one-line errors), `plan` (steps, each carrying
its stage's spec, and their keys), `cache` (entries by key, the lock, the artifacts view), `runner` (run,
explain).
"""

from __future__ import annotations

from .loading import apply_overrides, load_recipe
from .plan import CompileStep, DistillStep, Fingerprints, Step, plan, tool_versions
from .runner import RUN_SCHEMA, RunResult, explain, run
from .schema import CompileEntry, ModelSection, PruneSection, QuantizeSection, Recipe, RecipeError, Target

__all__ = [
    "RUN_SCHEMA",
    "CompileEntry",
    "CompileStep",
    "DistillStep",
    "Fingerprints",
    "ModelSection",
    "PruneSection",
    "QuantizeSection",
    "Recipe",
    "RecipeError",
    "RunResult",
    "Step",
    "Target",
    "apply_overrides",
    "explain",
    "load_recipe",
    "plan",
    "run",
    "tool_versions",
]
