"""`edgekit demo bundle`: a ready-to-build copy of a demo app with one compiled artifact in its assets.

The apps (`android_demo/`, `ios_demo/`, shipped in `edgekit/resources/apps/`) read `edgekit_bundle.json` (schema
`edgekit-bundle/1`): which model file and runtime, the input and output tensors (with int8 scale and zero
point where the artifact takes or gives int8), the preprocessing from the artifact's manifest, the labels
file and the benchmark defaults. Their benchmark mode writes the latency report schema
(`edgekit/profile/report.schema.json`) that `edgekit profile import` reads.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib.resources import files
from pathlib import Path
from typing import TypedDict

from .compile import get_target, read_manifest, targets
from .data import DatasetError, data_help, find_source, load_dataset
from .errors import EdgekitError
from .io import atomic_path, write_json
from .models.weights import read_checkpoint

BUNDLE_SCHEMA = "edgekit-bundle/1"
# the app templates, shipped inside the package (a wheel carries them); `android_demo/` and `ios_demo/` at the top of
# the source tree link here
APPS_DIR = Path(str(files("edgekit") / "resources" / "apps"))


class AppSpec(TypedDict):
    dir: str  # the template's folder under apps_dir()
    assets: str  # where the model and its files go, inside the app
    device: str  # the device id its reports carry by default
    threads: int  # benchmark threads by default (0: the runtime's choice)


APPS: dict[str, AppSpec] = {
    "android": {"dir": "android_demo", "assets": "app/src/main/assets", "device": "android-app", "threads": 4},
    "ios": {"dir": "ios_demo", "assets": "EdgekitDemo/Model", "device": "iphone", "threads": 0},
}
# what a copy of an app leaves out: build outputs and IDE state
SKIP = shutil.ignore_patterns(
    "build", ".gradle", ".idea", "*.xcodeproj", "DerivedData", "local.properties", ".DS_Store", "xcuserdata"
)


def apps_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_APPS", APPS_DIR))


def _template(app: str) -> Path:
    path = apps_dir() / APPS[app]["dir"]
    if not (path / "README.md").is_file():
        raise EdgekitError(
            f"the {app} demo app is not at '{path}'; reinstall edgekit (its package carries the apps) "
            "or set EDGEKIT_APPS to the folder holding android_demo/ and ios_demo/"
        )
    return path


def runtimes(app: str) -> tuple[str, ...]:
    """The targets whose artifacts the app runs (each target names its apps)."""
    return tuple(t.name for t in targets() if app in t.apps)


def _tensor(spec: dict) -> dict:
    return {
        "name": spec["name"],
        "shape": spec["shape"],
        "dtype": spec.get("dtype", "float32"),
        "layout": "NCHW",
        "quant": spec.get("quantization"),
    }


def labels_for(manifest: dict, labels: str | None) -> tuple[list[str], str]:
    """The class names: a file (one per line), a dataset's, the training data's (from the checkpoint), or numbers."""
    n = int(manifest["model"]["num_classes"])
    if labels:
        path = Path(labels)
        if path.is_file():
            names, source = _labels_file(path, n), str(path)
        elif path.is_dir():
            raise EdgekitError(
                f"--labels '{labels}' is a folder; give a text file with one class name per line "
                f"or a dataset ({data_help()})"
            )
        else:
            try:
                find_source(labels)
            except DatasetError:
                raise EdgekitError(
                    f"--labels '{labels}' is neither a file nor a dataset; give a text file with one class name "
                    f"per line or a dataset ({data_help()})"
                ) from None
            names, source = list(load_dataset(labels, 16).classes), f"the dataset {labels}"
        if len(names) != n:
            raise EdgekitError(
                f"--labels {labels} gives {len(names)} labels but the model has {n} classes; give one name per class"
            )
        return names, source
    ref = manifest["model"].get("reference") or ""
    if ref.endswith((".pt", ".pth", ".ckpt")) and Path(ref).is_file():
        data = (read_checkpoint(Path(ref)).get("provenance") or {}).get("data") or {}
        if len(data.get("classes") or []) == n:
            return [str(c) for c in data["classes"]], f"the training data of {ref} ({data.get('spec')})"
    return [f"class {i}" for i in range(n)], "none known: numbered (pass --labels FILE or a dataset)"


def _labels_file(path: Path, n: int) -> list[str]:
    """The class names in a text file, one a line (blank lines skipped); a one-line error for anything else."""
    fix = f"give a UTF-8 text file with one class name per line ({n} for this model)"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise EdgekitError(f"cannot read --labels '{path}' ({e.strerror or e}); {fix}") from None
    except UnicodeDecodeError:
        raise EdgekitError(f"--labels '{path}' is not a text file (not UTF-8); {fix}") from None
    if "\x00" in text:
        raise EdgekitError(f"--labels '{path}' is not a text file (it holds NUL bytes); {fix}")
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not names:
        raise EdgekitError(f"--labels '{path}' is empty; {fix}")
    return names


def bundle(
    artifact: str | Path,
    app: str,
    out: str | Path,
    *,
    labels: str | None = None,
    device_name: str | None = None,
    runs: int = 50,
    warmup: int = 10,
    threads: int | None = None,
) -> dict:
    """Copy the `app` demo to `out` with `artifact`, its manifest, labels and preprocessing in its assets."""
    if app not in APPS:
        raise EdgekitError(f"unknown app '{app}'; choose android or ios")
    if runs < 1 or warmup < 0:
        raise EdgekitError(f"--runs {runs} / --warmup {warmup}: give at least 1 run and 0 or more warm-up runs")
    spec = APPS[app]
    artifact = Path(artifact)
    manifest = read_manifest(artifact)  # checks the artifact's sha256 against its manifest
    target = get_target(manifest["target"])
    runs_here = runtimes(app)
    if target.name not in runs_here:
        other = next((a for a in APPS if a in target.apps), None)
        hint = f"use --app {other}" if other else "compile for " + " or ".join(runs_here)
        raise EdgekitError(f"the {app} app runs {' and '.join(runs_here)} artifacts, not {target.name}; {hint}")
    target.check_app(app, manifest)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgekitError(f"--out '{out}' exists and is not empty; give a new folder")
    template = _template(app)
    names, labels_source = labels_for(manifest, labels)
    model_file = "model" + artifact.suffix  # model.pte, model.tflite, model.mlpackage
    info = {
        "schema": BUNDLE_SCHEMA,
        "app": app,
        "model_file": model_file,
        "runtime": target.name,
        "delegate": target.delegate_of(manifest),
        "artifact": {
            "name": manifest["artifact"],
            "sha256": manifest["sha256"],
            "bytes": manifest["bytes"],
            "model": manifest["model"].get("name"),
            "quantization": (manifest.get("quantization") or {}).get("scheme"),
        },
        "input": _tensor(manifest["inputs"][0]),
        "output": _tensor(manifest["outputs"][0]),
        "preprocessing": manifest["preprocessing"],
        "labels": "labels.txt",
        "num_classes": len(names),
        "benchmark": {"warmup": warmup, "runs": runs, "threads": spec["threads"] if threads is None else threads},
        "device_name": device_name or spec["device"],
        **target.bundle_info(manifest),
    }
    with atomic_path(out) as tmp:
        shutil.copytree(template, tmp, ignore=SKIP)
        assets = tmp / spec["assets"]
        assets.mkdir(parents=True, exist_ok=True)
        if artifact.is_dir():
            shutil.copytree(artifact, assets / model_file)
        else:
            shutil.copy2(artifact, assets / model_file)
        write_json(assets / "model.json", manifest)
        (assets / "labels.txt").write_text("\n".join(names) + "\n")
        write_json(assets / "edgekit_bundle.json", info)
    return {
        "out": str(out),
        "app": app,
        "assets": str(out / spec["assets"]),
        "model_file": model_file,
        "runtime": target.name,
        "labels": labels_source,
        "bundle": info,
    }


def read_bundle(path: str | Path) -> dict:
    """An app's edgekit_bundle.json (for tests and tools)."""
    data = json.loads(Path(path).read_text())
    if data.get("schema") != BUNDLE_SCHEMA:
        raise EdgekitError(f"'{path}' is not an edgekit bundle description ({BUNDLE_SCHEMA})")
    return data
