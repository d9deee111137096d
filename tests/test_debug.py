"""`edgekit debug` and the breach messages of compile and verify: the module where an artifact goes wrong.

A defect is seeded in one layer, and the module named first must be that layer: its weights changed in the
artifact (compile's breach), or in the model the artifact is compared with (`debug --model`, `verify --model`).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import edgekit
from edgekit.compile.debugging import DebugError, compare_modules, debug
from edgekit.compile.export import prepare_for_export
from edgekit.compile.onnx import Onnx

from .conftest import assert_user_error, randomize, run_cli

MODEL, SIZE = "mobilenetv2_100", 32
LAYER = "features.16.conv.2"  # the projection convolution of the last inverted residual (no activation after it)
BLOCK = "features.16.conv.3"  # its BatchNorm: the export folds it into the convolution, so the first value the
# artifact has of this layer is the BatchNorm's


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("debug")
    net = randomize(edgekit.create_model(MODEL, num_classes=10))
    with torch.no_grad():  # the zoo's classifier starts at zero: give the logits something to show
        net.classifier[1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    torch.save(net.state_dict(), root / "good.pt")
    bad = {k: v.clone() for k, v in net.state_dict().items()}
    bad[f"{LAYER}.weight"] *= -3.0  # the seeded defect
    torch.save(bad, root / "bad.pt")
    result = edgekit.compile(MODEL, "onnx", out=root / "c", input_size=SIZE, num_classes=10, weights=root / "good.pt")
    return root, result.artifact


def test_debug_names_the_seeded_layer_first(compiled, tmp_path):
    root, artifact = compiled
    proc = run_cli("debug", str(artifact), "--model", MODEL, "--weights", str(root / "bad.pt"), "--json",
                   "--html", str(tmp_path / "d.html"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["first_breach"]["module"].startswith(BLOCK)
    order = [row["module"] for row in r["rows"]]
    first = order.index(r["first_breach"]["module"])
    assert first > 10 and not any(row["breach"] for row in r["rows"][:first])  # everything before it agrees
    assert r["modules_compared"] >= 0.9 * len([m for m in order if m])
    page = (tmp_path / "d.html").read_text()
    assert "class='bar'" in page and "class='failed'" in page


def test_a_correct_artifact_agrees_module_by_module(compiled):
    _, artifact = compiled
    r = debug(artifact, samples=1)
    assert r["first_breach"] is None
    assert r["modules_compared"] > 50
    assert max(row["rel_error"] for row in r["rows"]) < 1e-4


def test_verify_names_the_first_diverging_module(compiled):
    root, artifact = compiled
    proc = run_cli("verify", str(artifact), "--model", MODEL, "--weights", str(root / "bad.pt"))
    assert proc.returncode == 2
    assert f"first diverging module {BLOCK}" in proc.stderr
    assert "run edgekit debug" in proc.stderr


def test_compile_names_the_module_of_a_defect_in_the_artifact(compiled, tmp_path, monkeypatch):
    export = Onnx.export

    def faulty(self, model, example, path, opts):  # the converter computes one layer wrong
        info = export(self, model, example, path, opts)
        m = onnx.load(str(path))
        for node in m.graph.node:
            scope = " ".join(p.value for p in node.metadata_props)
            if node.op_type == "Conv" and f"'model.{BLOCK}'" in scope:
                init = next(i for i in m.graph.initializer if i.name == node.input[1])
                w = onnx.numpy_helper.to_array(init) * -3.0
                init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))
                break
        else:
            raise AssertionError("no Conv node of the layer")
        onnx.save(m, str(path))
        return info

    monkeypatch.setattr(Onnx, "export", faulty)
    proc = run_cli("compile", MODEL, "--target", "onnx", "--input-size", str(SIZE), "--num-classes", "10",
                   "--weights", str(compiled[0] / "good.pt"), "--out", str(tmp_path / "c"))  # fmt: skip
    assert_user_error(proc, "differs from PyTorch beyond tolerance", f"first diverging module {BLOCK}")
    assert not list((tmp_path / "c").glob("*.onnx"))


def test_debug_of_a_target_without_intermediate_values_is_one_line(compiled, monkeypatch):
    _, artifact = compiled
    monkeypatch.setattr(Onnx, "capture", lambda self, path, manifest, x, model=None: None)
    proc = run_cli("debug", str(artifact))
    assert_user_error(proc, "gives no intermediate values of", "compile again")
    manifest = json.loads(artifact.with_name(artifact.name + ".json").read_text())
    with pytest.raises(DebugError):
        compare_modules(artifact, manifest, prepare_for_export(edgekit.create_model(MODEL, num_classes=10)))
