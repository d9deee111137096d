"""The demo apps: `edgekit demo bundle` for each runtime, the apps' sample reports, the apps' sources parsed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import edgekit
from edgekit.demo import APPS, BUNDLE_SCHEMA, read_bundle, runtimes
from edgekit.io import sha256_of
from edgekit.profile import load_report

from .conftest import assert_user_error, run_cli

pytestmark = pytest.mark.xdist_group("demo")  # one worker trains the checkpoint and compiles it once per target

ROOT = Path(__file__).resolve().parents[1]
NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A network trained (briefly) on digits: its checkpoint records the data's classes."""
    d = tmp_path_factory.mktemp("ckpt")
    (d / "net.py").write_text(NET)
    edgekit.train(f"{d / 'net.py'}:Net", "digits", out=d / "net.pt", epochs=1, input_size=16, limit=64)
    return d / "net.pt"


def compiled(checkpoint, target, tmp_path, **kw):
    return edgekit.compile(str(checkpoint), target, out=tmp_path / target, name="net", **kw).artifact


@pytest.fixture
def artifact_of(checkpoint, shared_compile):
    """The checkpoint compiled for a target as `compiled` does, once per session: these tests only read it."""
    return lambda target: shared_compile(str(checkpoint), target, name="net").artifact


@pytest.mark.parametrize(
    "target, app, model_file",
    [
        ("executorch", "android", "model.pte"),
        ("tflite", "android", "model.tflite"),
        ("coreml", "ios", "model.mlpackage"),
        ("executorch", "ios", "model.pte"),
    ],
)
def test_bundle_gives_an_app_tree_with_the_model_and_its_preprocessing(artifact_of, tmp_path, target, app, model_file):
    artifact = artifact_of(target)
    out = tmp_path / "app"
    proc = run_cli("demo", "bundle", str(artifact), "--app", app, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assets = out / APPS[app]["assets"]
    manifest = json.loads(Path(f"{artifact}.json").read_text())
    assert sha256_of(assets / model_file) == manifest["sha256"]  # the artifact itself, byte for byte
    assert json.loads((assets / "model.json").read_text()) == manifest
    b = read_bundle(assets / "edgekit_bundle.json")
    assert b["schema"] == BUNDLE_SCHEMA and b["runtime"] == target and b["model_file"] == model_file
    assert b["preprocessing"] == manifest["preprocessing"] and b["preprocessing"]["size"] == 16
    assert b["input"]["shape"] == [1, 3, 16, 16] and b["output"]["shape"] == [1, 10]
    assert (assets / "labels.txt").read_text().split() == [str(i) for i in range(10)]  # digits, from the checkpoint
    assert "10 from the training data" in proc.stdout
    template = ROOT / APPS[app]["dir"]
    for src in template.rglob("*"):  # the whole app came along
        if src.is_file() and "build" not in src.parts:
            assert (out / src.relative_to(template)).is_file(), src


def test_bundle_records_int8_input_quantization(checkpoint, tmp_path):
    artifact = compiled(checkpoint, "tflite", tmp_path, quantize="int8", calib="digits", calib_size=32, val_samples=32)
    b = edgekit.demo.bundle(artifact, "android", tmp_path / "app", labels=None)["bundle"]
    assert b["input"]["dtype"] == "int8" and set(b["input"]["quant"]) == {"scale", "zero_point"}
    assert b["artifact"]["quantization"] == "int8"


def test_bundle_mistakes_are_one_line(artifact_of, tmp_path):
    onnx = artifact_of("onnx")
    assert_user_error(
        run_cli("demo", "bundle", str(onnx), "--app", "android", "--out", str(tmp_path / "a")),
        "the android app runs executorch and tflite artifacts, not onnx",
    )
    coreml = artifact_of("coreml")
    assert_user_error(
        run_cli("demo", "bundle", str(coreml), "--app", "android", "--out", str(tmp_path / "a")),
        "not coreml; use --app ios",
    )
    tfl = artifact_of("tflite")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert_user_error(
        run_cli("demo", "bundle", str(tfl), "--app", "android", "--out", str(tmp_path / "full")),
        "exists and is not empty",
    )
    assert_user_error(
        run_cli(
            "demo",
            "bundle",
            str(tfl),
            "--app",
            "android",
            "--labels",
            "fashion-mnist:/nope",
            "--out",
            str(tmp_path / "b"),
        ),
        "/nope",
    )
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    assert_user_error(
        run_cli(
            "demo",
            "bundle",
            str(tfl),
            "--app",
            "android",
            "--labels",
            str(tmp_path / "three.txt"),
            "--out",
            str(tmp_path / "b"),
        ),
        "gives 3 labels but the model has 10 classes",
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written


@pytest.mark.parametrize("app", sorted(APPS))
def test_each_apps_sample_report_validates_and_imports(app, tmp_path):
    path = ROOT / APPS[app]["dir"] / "sample_report.json"
    r = load_report(path)
    assert r["device"]["via"] == "app" and len(r["samples_ms"]) == r["runs"]
    assert r["runtime"]["name"] in runtimes(app)
    proc = run_cli("profile", "import", str(path), "--db", str(tmp_path / "db.sqlite"))
    assert proc.returncode == 0, proc.stderr
    assert "recorded" in proc.stdout


LANGUAGES = {".kt": "kotlin", ".kts": "kotlin", ".swift": "swift"}


def _parser(lang: str):
    import importlib

    import tree_sitter  # the dev extra installs it with the Kotlin and Swift grammars

    grammar = importlib.import_module(f"tree_sitter_{lang}")
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


def _first_error(node):
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        found = _first_error(child)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("app", sorted(APPS))
def test_app_sources_parse(app):
    """Kotlin and Swift cannot be built here (no Android SDK, no Xcode); their syntax can be checked."""
    sources = [p for p in (ROOT / APPS[app]["dir"]).rglob("*") if p.suffix in LANGUAGES]
    assert sources
    for path in sources:
        tree = _parser(LANGUAGES[path.suffix]).parse(path.read_bytes())
        bad = _first_error(tree.root_node)
        assert bad is None, f"{path}:{bad.start_point[0] + 1}: syntax error near {bad.text[:60]!r}"


@pytest.mark.parametrize("app", sorted(APPS))
def test_app_reads_the_bundle_keys_edgekit_writes_and_writes_every_required_report_key(app):
    code = "\n".join(p.read_text() for p in (ROOT / APPS[app]["dir"]).rglob("*") if p.suffix in LANGUAGES)
    for key in (
        "model_file",
        "runtime",
        "input",
        "output",
        "preprocessing",
        "labels",
        "benchmark",
        "device_name",
        "mean",
        "std",
        "size",
        "scale",
        "zero_point",
        "shape",
    ):
        assert re.search(rf"\b{key}\b|\b{_camel(key)}\b", code), f"{app} app never mentions bundle key {key!r}"
    schema = json.loads((ROOT / "edgekit" / "profile" / "report.schema.json").read_text())
    for key in schema["required"]:
        assert re.search(rf"\b{key}\b|\b{_camel(key)}\b", code), f"{app} app never writes report key {key!r}"


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.capitalize() for w in rest)
