"""Recipes: schema errors with file:line, caching by key, reruns of what changed only, failures kept apart."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import torch
import yaml

from edgekit import recipe as recipes
from edgekit.io import sha256_of
from edgekit.models import load_model, trusted_code

from .conftest import assert_user_error, run_cli

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


class Sorts(Net):
    """A sort converts for TFLite but has no kernel in its runtime (STABLEHLO_SORT); ONNX Runtime runs it."""

    def forward(self, x):
        return self.fc(torch.sort(self.body(x).mean((2, 3)), dim=1).values)
'''


def small_recipe(tmp_path: Path, **changes) -> Path:
    """A recipe with every kind of step on a small network (seconds per step)."""
    (tmp_path / "net.py").write_text(NET)
    r = {
        "name": "small",
        "seed": 0,
        "model": {"ref": f"{tmp_path / 'net.py'}:Net", "input_size": 16},
        "data": "digits",
        "train": {"epochs": 1, "lr": 1e-2, "batch_size": 32, "limit": 256},
        "prune": {"method": "magnitude", "ratio": 0.5, "structured": True},
        "distill": {"epochs": 2, "lr": 1e-2, "batch_size": 32, "limit": 256},
        "quantize": {"schemes": {"onnx": "int8"}, "calib_size": 32, "val_samples": 64},
        "compile": ["onnx"],
        "profile": {"runs": 3, "warmup": 1, "threads": 1},
    }
    r.update(changes)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def statuses(result) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result.manifest["steps"]}


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "latency.sqlite"
    monkeypatch.setenv("EDGEKIT_DB", str(path))
    return path


# -- schema ---------------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


GOOD = """name: t
model: mobilevig_ti
prune:
  method: magnitude
  ratio: 0.5
compile: [onnx]
"""


@pytest.mark.parametrize(
    "text, needle",
    [
        (GOOD.replace("ratio: 0.5", "ratoi: 0.5"), "r.yaml:5: prune.ratoi: unknown key; did you mean 'ratio'?"),
        (GOOD.replace("ratio: 0.5", "ratio: 1.5"), "r.yaml:5: prune.ratio: Input should be less than 1 (got 1.5)"),
        (
            GOOD.replace("method: magnitude", "method: lottery"),
            "r.yaml:4: prune.method: Input should be 'oto', 'magnitude'",
        ),
        (GOOD.replace("[onnx]", "[onnx, tflitee]"), "r.yaml:6: compile.1.target: Input should be"),
        (GOOD.replace("[onnx]", "[onnx, onnx]"), "r.yaml:6: compile.1.id: 'onnx' appears twice; give each entry an id"),
        (
            GOOD + "quantize:\n  schemes: {coreml: int8}\n",
            "r.yaml:8: quantize.schemes.coreml: coreml has no scheme 'int8'",
        ),
        (
            GOOD + "distill: {epochs: 1}\n".replace("{", "{teacher: null, ") + "profil: {}\n",
            "r.yaml:8: profil: unknown key; did you mean 'profile'?",
        ),
        (GOOD.replace("name: t\n", ""), "r.yaml:1: name: missing (required)"),
        (GOOD.replace("ratio: 0.5", "ratio: [0.5"), "r.yaml:6: not valid YAML"),
    ],
)
def test_schema_errors_name_the_key_and_line(tmp_path, text, needle):
    with pytest.raises(recipes.RecipeError) as e:
        recipes.load_recipe(write(tmp_path, text))
    assert needle in str(e.value), str(e.value)


def test_set_overrides_are_applied_and_blamed(tmp_path):
    path = write(tmp_path, GOOD)
    r, _ = recipes.load_recipe(
        path, ["prune.ratio=0.3", "compile=[onnx, {target: executorch, quantize: int8}]", "train.epochs=2"]
    )
    assert r.prune.ratio == 0.3 and r.train.epochs == 2
    assert [c.target for c in r.compile] == ["onnx", "executorch"] and r.scheme_for(r.compile[1]) == "int8"
    with pytest.raises(recipes.RecipeError, match=r"^--set prune.ratio=2: prune.ratio: Input should be less than 1"):
        recipes.load_recipe(path, ["prune.ratio=2"])
    with pytest.raises(recipes.RecipeError, match="give KEY=VALUE"):
        recipes.load_recipe(path, ["prune.ratio"])


def test_distill_needs_a_teacher_and_profile_needs_targets(tmp_path):
    with pytest.raises(recipes.RecipeError, match="distill.teacher: give a teacher"):
        recipes.load_recipe(write(tmp_path, "name: t\nmodel: mobilevig_ti\ndistill: {epochs: 1}\n"))
    with pytest.raises(recipes.RecipeError, match="profile: there is nothing to profile"):
        recipes.load_recipe(write(tmp_path, "name: t\nmodel: mobilevig_ti\nprofile: {runs: 3}\n"))


def test_missing_files_and_unknown_models_fail_before_anything_runs(tmp_path):
    with pytest.raises(
        recipes.RecipeError, match=r"model.weights: 'nope.pth' does not exist; .*--set model.weights=PATH"
    ):
        recipes.explain(
            write(tmp_path, GOOD.replace("model: mobilevig_ti", "model: {ref: mobilevig_ti, weights: nope.pth}"))
        )
    with pytest.raises(Exception, match="unknown model 'mobilevig_tii'"):
        recipes.explain(write(tmp_path, GOOD.replace("mobilevig_ti", "mobilevig_tii")))
    proc = run_cli("run", str(tmp_path / "absent.yaml"))
    assert_user_error(proc, "recipe", "absent.yaml", "does not exist")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_validate_and_plan(path, tmp_path):
    r, raw = recipes.load_recipe(path)
    # the family recipes start from official weights and ImageNet; planning them here needs stand-ins
    sets = ["model.weights=null", "data=digits"] if r.model.weights or r.data != "digits" else []
    steps = recipes.explain(path, tmp_path / "run", sets)
    names = [s["name"] for s in steps]
    assert {f"compile-{c.step_id}" for c in r.compile} <= set(names)
    assert r.compile and r.report, "every shipped recipe compiles and reports"
    assert len({s["key"] for s in steps}) == len(steps)
    assert raw["name"] == path.stem


# -- running ----------------------------------------------------------------------------------------------------


@pytest.mark.xdist_group("recipe")
def test_run_caches_every_step_and_reruns_only_what_changed(tmp_path, db):
    path = small_recipe(tmp_path)
    out = tmp_path / "run"
    first = recipes.run(path, out)
    expect = ["train", "prune", "distill", "compile-onnx", "profile-onnx"]
    assert list(statuses(first)) == expect and set(statuses(first).values()) == {"ran"}
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "complete" and m["recipe"]["resolved"]["prune"]["ratio"] == 0.5
    for a in m["artifacts"]:  # every listed file is there and hashes as recorded
        assert sha256_of(out / a["path"]) == a["sha256"], a
    kinds = {a["kind"] for a in m["artifacts"]}
    assert kinds == {"checkpoint", "artifact", "manifest", "latency_report"}
    onnx = json.loads((out / "artifacts" / "small.onnx.json").read_text())
    assert onnx["verification"]["status"] == "passed" and onnx["quantization"]["scheme"] == "int8"
    assert onnx["sha256"] == sha256_of(out / "artifacts" / "small.onnx")
    html = (out / "report.html").read_text()
    assert "edgekit run: small" in html and "small.onnx" in html and "profile-onnx" in html
    with trusted_code():  # its base is the recipe's net.py, which this test wrote
        pruned = load_model(str(out / "artifacts" / "model.pt")).model
    assert pruned.body[3].out_channels < 32  # the checkpoint the artifacts came from is the pruned one

    again = recipes.run(path, out)
    assert set(statuses(again).values()) == {"cached"}
    assert [s["key"] for s in again.manifest["steps"]] == [s["key"] for s in first.manifest["steps"]]
    assert recipes.explain(path, out) and all(s["cached"] for s in recipes.explain(path, out))

    runs = recipes.run(path, out, ["profile.runs=4"])
    assert statuses(runs) == {**dict.fromkeys(expect[:-1], "cached"), "profile-onnx": "ran"}
    longer = recipes.run(path, out, ["distill.epochs=1"])
    assert statuses(longer) == {
        "train": "cached",
        "prune": "cached",
        "distill": "ran",
        "compile-onnx": "ran",
        "profile-onnx": "ran",
    }
    back = recipes.run(path, out)  # the first configuration is still in the cache
    assert set(statuses(back).values()) == {"cached"}
    from edgekit.latency import LatencyDB

    with LatencyDB(db) as d:
        assert len(d.rows("onnx", "host")) == 3  # profile ran three times: once per distinct key


@pytest.mark.xdist_group("recipe")
def test_one_target_failing_keeps_the_others(tmp_path, db):
    path = small_recipe(
        tmp_path,
        model={"ref": f"{tmp_path / 'net.py'}:Sorts", "input_size": 16},
        train=None,
        prune=None,
        distill=None,
        quantize=None,
        compile=["tflite", "onnx"],
    )
    out = tmp_path / "run"
    proc = run_cli("run", str(path), "--out", str(out))
    assert_user_error(proc, "step compile-tflite failed", "SORT", "2 of 4 steps finished")
    assert "ran      compile-onnx" in proc.stdout and "blocked  profile-tflite" in proc.stdout
    m = json.loads((out / "run.json").read_text())
    st = {s["name"]: s["status"] for s in m["steps"]}
    assert st == {"compile-tflite": "failed", "compile-onnx": "ran", "profile-tflite": "blocked", "profile-onnx": "ran"}
    assert (out / "artifacts" / "small.onnx").is_file() and not list((out / "artifacts").glob("*.tflite*"))
    assert "failed" in (out / "report.html").read_text()
    assert not [p for p in (out / "cache").iterdir() if p.name.startswith("compile-tflite")]  # nothing half-written
    with pytest.raises(recipes.RecipeError, match="compile-tflite failed"):
        recipes.run(path, out)
    st = {s["name"]: s["status"] for s in json.loads((out / "run.json").read_text())["steps"]}
    assert st["compile-onnx"] == "cached" and st["compile-tflite"] == "failed"  # a failure is retried, not cached


@pytest.mark.xdist_group("recipe")
def test_interrupted_run_leaves_no_entry_and_training_resumes(tmp_path, db):
    path = small_recipe(tmp_path, compile=["onnx"], quantize=None, profile=None)
    out = tmp_path / "run"
    epochs_done = []

    def interrupt(msg: str) -> None:  # Ctrl-C inside distill's second epoch
        if msg.startswith("distill: step"):
            epochs_done.append(msg)
            if len(epochs_done) == 12:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recipes.run(path, out, status=interrupt)
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "interrupted"
    entries = {p.name.rsplit("-", 1)[0]: p for p in (out / "cache").iterdir()}
    assert set(entries) == {"train", "prune", "distill"} and entries["distill"].name.endswith(".work")
    assert not (entries["distill"] / "step.json").exists()  # no finished entry for the interrupted step

    resumed = recipes.run(path, out)
    assert statuses(resumed) == {"train": "cached", "prune": "cached", "distill": "ran", "compile-onnx": "ran"}
    straight = recipes.run(path, tmp_path / "straight")
    a = torch.load(out / "artifacts" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "straight" / "artifacts" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)  # resumed from epoch 1 = never interrupted
    assert (
        resumed.manifest["steps"][3]["outputs"]["small.onnx"] == straight.manifest["steps"][3]["outputs"]["small.onnx"]
    )


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    path = small_recipe(tmp_path, train=None, prune=None, distill=None, quantize=None, profile=None)
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(recipes.RecipeError, match="another `edgekit run` is writing to"):
            recipes.run(path, out)


@pytest.mark.heavy
def test_quickstart_runs_end_to_end_and_then_from_the_cache(tmp_path, db):
    out = tmp_path / "qs"
    proc = run_cli("run", str(RECIPES / "quickstart.yaml"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "run.json").read_text())
    st = {s["name"]: s["status"] for s in m["steps"]}
    assert st.pop("profile-coreml") in ("skipped", "ran") and set(st.values()) == {"ran"}
    for s in m["steps"]:
        if s["kind"] == "compile":
            assert s["summary"]["verification"]["status"] in ("passed", "skipped")
    assert (out / "report.html").is_file()
    proc = run_cli("run", str(RECIPES / "quickstart.yaml"), "--out", str(out))
    assert proc.returncode == 0 and "10 cached" in proc.stdout, proc.stdout
