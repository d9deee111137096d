"""The step cache: finished entries found by key, the run folder's lock, stale-file cleanup, the artifacts view."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..io import atomic_path, sha256_of
from .plan import Step
from .schema import RecipeError


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
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecipeError(
                f"another `edgekit run` is writing to '{out}'; wait for it or give another --out"
            ) from None
        yield


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
    summaries: dict[str, Any] = {s["name"]: s.get("summary") for s in steps}  # step.json summaries (JSON)
    with atomic_path(out / "artifacts") as tmp:
        tmp.mkdir()
        model_steps = [
            s for s in steps if s["kind"] in ("train", "prune", "distill") and s["status"] in ("ran", "cached")
        ]
        if model_steps:
            last = model_steps[-1]
            _link_tree(out / last["dir"] / "model.pt", tmp / "model.pt")
            listed.append(
                {
                    "kind": "checkpoint",
                    "step": last["name"],
                    "path": "artifacts/model.pt",
                    "sha256": last["outputs"]["model.pt"],
                }
            )
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
