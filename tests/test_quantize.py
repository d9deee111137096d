"""Quantization on each target's own machinery: sizes, accuracy kept, layers left float, and bad requests."""

from __future__ import annotations

import json

import pytest

import edgekit
from edgekit.compile import targets
from edgekit.profile import profile
from edgekit.quantize import layer_units
from tests.conftest import assert_user_error, run_cli

NET = """
import torch
from torch import nn


class QNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.GELU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.pool(self.body(x)).flatten(1))
"""
SCHEMES = {t.name: t.scheme_names() for t in targets()}
CASES = [(t, s) for t, schemes in SCHEMES.items() for s in schemes]
pytestmark = pytest.mark.xdist_group("quantize")  # one worker trains the network once


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    (root / "qnet.py").write_text(NET)
    ckpt = root / "qnet.pt"
    edgekit.train(f"{root / 'qnet.py'}:QNet", "digits", out=ckpt, epochs=3, input_size=16, lr=1e-2, batch_size=32)
    floats = {t: edgekit.compile(str(ckpt), t, out=root / "float") for t in SCHEMES}
    return ckpt, floats


@pytest.mark.parametrize("target, scheme", CASES)
def test_every_scheme_compiles_verifies_and_keeps_accuracy(trained, tmp_path, target, scheme):
    ckpt, floats = trained
    r = edgekit.compile(
        str(ckpt), target, quantize=scheme, calib="digits", calib_size=64, out=tmp_path, min_deployment_target="iOS18"
    )
    m = r.manifest
    q = m["quantization"]
    assert q["scheme"] == scheme
    assert q.get("calibration", {}).get("samples", 0) == (64 if scheme in ("int8", "w8a8") else 0)
    ratio = m["bytes"] / floats[target].manifest["bytes"]
    # against the float artifact: fp32 for every target but Core ML, whose float program is fp16
    expected = {"fp16": 0.6, "w8": 0.8, "w8a8": 0.8, "w4": 0.6, "palette4": 0.6}.get(scheme, 0.45)
    if (target, scheme) != ("executorch", "int8-dynamic"):  # XNNPACK's dynamic scheme skips conv+ReLU, see README
        assert ratio < expected, ratio
    a = q["accuracy"]
    if target == "coreml" and scheme != "w8a8":
        assert a["status"] == "not measured" and "macOS" in a["reason"]
    else:
        assert a["status"] == "measured" and a["samples"] == 359
        assert a["float"] > 0.85
        assert a["drop_points"] <= 2.0 and a["agreement"] >= 0.95, a
    assert m["verification"]["status"] in ("passed", "skipped")
    if target != "coreml":
        assert m["verification"]["status"] == "passed"
        assert m["verification"]["tolerance"]["min_cosine"] < 0.9999  # the scheme's bounds, not fp32's


def test_static_tflite_int8_takes_int8_input_with_its_scale(trained, shared_compile):
    r = shared_compile(str(trained[0]), "tflite", quantize="int8", calib="digits", calib_size=32)
    inp = r.manifest["inputs"][0]
    assert inp["dtype"] == "int8" and inp["quantization"]["scale"] > 0
    # LiteRT's profiler on the host runs it on the same int8 input: XNNPACK's quantized kernels, by module
    rows = profile(r.artifact, runs=2, warmup=1, threads=1, per_op=True)["ops"]
    assert any("QS8" in row["op"] or "QC8" in row["op"] for row in rows), rows
    assert all(row["module"] is not None for row in rows if row["op"].startswith("Convolution"))


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx"])
def test_float_layers_stay_float(trained, shared_compile, tmp_path, target):
    ckpt = str(trained[0])
    full = shared_compile(ckpt, target, quantize="int8", calib="digits", calib_size=32)
    # body.6 and its BatchNorm body.7 (ONNX's exporter folds the BN into the conv and names it after the BN)
    part = edgekit.compile(
        ckpt,
        target,
        quantize="int8",
        calib="digits",
        calib_size=32,
        out=tmp_path / "b",
        float_layers=["body.6", "body.7"],
    )
    assert part.manifest["quantization"]["float_layers"] == ["body.6", "body.7"]
    # body.6 holds 64*64*9 of the 58 k weights: float, it costs ~3 bytes more per weight
    assert part.manifest["bytes"] - full.manifest["bytes"] > 2.5 * 64 * 64 * 9


def test_max_drop_zero_is_met(trained, tmp_path):
    r = edgekit.compile(
        str(trained[0]), "executorch", quantize="int8", calib="digits", calib_size=32, max_drop=0.0, out=tmp_path
    )
    q = r.manifest["quantization"]
    assert q["accuracy"]["drop_points"] <= 0.0
    steps = q["max_drop"]["steps"]
    assert steps[-1]["drop_points"] == q["accuracy"]["drop_points"]
    assert [s.get("added") for s in steps[1:]] == q["float_layers"]


def test_layer_units_group_layers_by_block():
    from edgekit.models import load_model

    units = layer_units(load_model("mobilevig_ti", input_size=32).model)
    assert 4 <= len(units) <= 16 and "stem" in units


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["--target", "onnx", "--quantize", "fp16"],
            "target 'onnx' has no quantization scheme 'fp16' (choose int8, int8-dynamic); it is a scheme of tflite",
        ),
        (
            ["--target", "executorch", "--quantize", "int8"],
            "--quantize int8 calibrates activations: give data with --calib",
        ),
        (
            ["--target", "executorch", "--quantize", "int8", "--calib", "digits", "--calib-size", "8"],
            "--calib-size 8 is too small",
        ),
        (["--target", "tflite", "--quantize", "int8", "--calib", "imagefolder:/nonexistent"], "does not exist"),
        (["--target", "coreml", "--quantize", "w4"], "needs Core ML 8: add --min-target iOS18"),
        (["--target", "coreml", "--quantize", "w8a8", "--calib", "digits"], "needs Core ML 7"),
        (
            ["--target", "onnx", "--quantize", "int8", "--calib", "digits", "--float-layer", "body.66"],
            "--float-layer 'body.66' is not a module of the model; did you mean body.6",
        ),
        (["--target", "onnx", "--calib", "digits"], "go with --quantize SCHEME"),
        (["--target", "tflite", "--quantize", "fp16", "--max-drop", "1"], "--max-drop applies to the int8"),
    ],
)
def test_bad_quantization_requests(trained, tmp_path, args, needle):
    out = tmp_path / "out"
    # the checkpoint's base is this test's own qnet.py: trusted, as a user trusts their own network
    assert_user_error(run_cli("compile", str(trained[0]), *args, "--out", str(out), "--trust-code"), needle)
    assert not out.exists()


def test_cli_prints_the_accuracy_and_json_carries_it(trained, tmp_path):
    proc = run_cli(
        "compile",
        str(trained[0]),
        "--target",
        "onnx",
        "--quantize",
        "int8-dynamic",
        "--calib",
        "digits",
        "--out",
        str(tmp_path),
        "--trust-code",
    )
    assert proc.returncode == 0, proc.stderr
    assert "quantized   int8-dynamic" in proc.stdout and "top-1 agreement" in proc.stdout
    manifest = json.loads((tmp_path / "qnet.onnx.json").read_text())
    assert manifest["quantization"]["accuracy"]["status"] == "measured"
