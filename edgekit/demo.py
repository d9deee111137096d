"""`edgekit demo bundle`: a ready-to-build copy of a demo app with one compiled artifact in its assets.

The apps (`android_demo/`, `ios_demo/` in the source tree) read `edgekit_bundle.json` (schema
`edgekit-bundle/1`): which model file and runtime, the input and output tensors (with int8 scale and zero
point where the artifact takes or gives int8), the preprocessing from the artifact's manifest, the labels
file and the benchmark defaults. Their benchmark mode writes the latency report schema
(`edgekit/profile/report.schema.json`) that `edgekit profile import` reads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import EdgekitError
from .io import atomic_path, write_json

BUNDLE_SCHEMA = "edgekit-bundle/1"
ROOT = Path(__file__).resolve().parents[1]

APPS = {
    "android": {"dir": "android_demo", "assets": "app/src/main/assets", "runtimes": ("executorch", "tflite"),
                "device": "android-app", "threads": 4},
    "ios": {"dir": "ios_demo", "assets": "EdgekitDemo/Model", "runtimes": ("coreml", "executorch"),
            "device": "iphone", "threads": 0},
}
COMPUTE_UNITS = {"ALL": "all", "CPU_ONLY": "cpuOnly", "CPU_AND_GPU": "cpuAndGPU", "CPU_AND_NE": "cpuAndNeuralEngine"}
# what a copy of an app leaves out: build outputs and IDE state
SKIP = shutil.ignore_patterns("build", ".gradle", ".idea", "*.xcodeproj", "DerivedData", "local.properties", ".DS_Store",
                              "xcuserdata")


def apps_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_APPS", ROOT))


def _template(app: str) -> Path:
    path = apps_dir() / APPS[app]["dir"]
    if not (path / "README.md").is_file():
        raise EdgekitError(f"the {app} demo app is not at '{path}'; run edgekit from its source checkout "
                           "(pip install -e .) or set EDGEKIT_APPS to the folder holding android_demo/ and ios_demo/")
    return path


def _tensor(spec: dict) -> dict:
    return {"name": spec["name"], "shape": spec["shape"], "dtype": spec.get("dtype", "float32"), "layout": "NCHW",
            "quant": spec.get("quantization")}


def labels_for(manifest: dict, labels: str | None) -> tuple[list[str], str]:
    """The class names: a file (one per line), a dataset's, the training data's (from the checkpoint), or numbers."""
    n = int(manifest["model"]["num_classes"])
    if labels:
        path = Path(labels)
        if path.is_file():
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            source = str(path)
        else:
            from .data import load_dataset

            names, source = list(load_dataset(labels, 16).classes), f"the dataset {labels}"
        if len(names) != n:
            raise EdgekitError(f"--labels {labels} gives {len(names)} labels but the model has {n} classes")
        return names, source
    ref = manifest["model"].get("reference") or ""
    if ref.endswith((".pt", ".pth", ".ckpt")) and Path(ref).is_file():
        from .models.weights import read_checkpoint

        data = (read_checkpoint(Path(ref)).get("provenance") or {}).get("data") or {}
        if len(data.get("classes") or []) == n:
            return [str(c) for c in data["classes"]], f"the training data of {ref} ({data.get('spec')})"
    return [f"class {i}" for i in range(n)], "none known: numbered (pass --labels FILE or a dataset)"


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
    from .verify import read_manifest

    if app not in APPS:
        raise EdgekitError(f"unknown app '{app}'; choose android or ios")
    if runs < 1 or warmup < 0:
        raise EdgekitError(f"--runs {runs} / --warmup {warmup}: give at least 1 run and 0 or more warm-up runs")
    spec = APPS[app]
    artifact = Path(artifact)
    manifest = read_manifest(artifact)  # checks the artifact's sha256 against its manifest
    target = manifest["target"]
    delegate = manifest.get("options", {}).get("delegate")
    if target not in spec["runtimes"]:
        other = next(a for a, s in APPS.items() if target in s["runtimes"]) if target != "onnx" else None
        hint = f"use --app {other}" if other else "compile for " + " or ".join(spec["runtimes"])
        raise EdgekitError(f"the {app} app runs {' and '.join(spec['runtimes'])} artifacts, not {target}; {hint}")
    if app == "android" and target == "executorch" and delegate == "coreml":
        raise EdgekitError("this .pte is delegated to Core ML, which runs on Apple devices only; bundle it with "
                           "--app ios, or compile with --delegate xnnpack for Android")
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
        "runtime": target,
        "delegate": delegate or ("xnnpack" if target in ("executorch", "tflite") else None),
        "artifact": {"name": manifest["artifact"], "sha256": manifest["sha256"], "bytes": manifest["bytes"],
                     "model": manifest["model"].get("name"),
                     "quantization": (manifest.get("quantization") or {}).get("scheme")},
        "input": _tensor(manifest["inputs"][0]),
        "output": _tensor(manifest["outputs"][0]),
        "preprocessing": manifest["preprocessing"],
        "labels": "labels.txt",
        "num_classes": len(names),
        "benchmark": {"warmup": warmup, "runs": runs, "threads": spec["threads"] if threads is None else threads},
        "device_name": device_name or spec["device"],
    }
    if target == "coreml":
        info["compute_units"] = COMPUTE_UNITS.get(str(manifest.get("compute_units", "ALL")), "all")
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
    return {"out": str(out), "app": app, "assets": str(out / spec["assets"]), "model_file": model_file,
            "runtime": target, "labels": labels_source, "bundle": info}


def read_bundle(path: str | Path) -> dict:
    """An app's edgekit_bundle.json (for tests and tools)."""
    data = json.loads(Path(path).read_text())
    if data.get("schema") != BUNDLE_SCHEMA:
        raise EdgekitError(f"'{path}' is not an edgekit bundle description ({BUNDLE_SCHEMA})")
    return data
