"""Targets are plug-ins: one module and one device definition add a target that compile, verify, a recipe,
profile, the report schema and the CLI all know, with nothing else edited."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.compile import INT8, ExportInfo, Runner, Scheme, Target, get_target, register, target_names, unregister
from edgekit.errors import EdgekitError
from tests.conftest import assert_user_error, run_cli

pytestmark = pytest.mark.xdist_group("toy-target")


class _ProgramRunner(Runner):
    def __init__(self, path: Path):
        self.module = torch.export.load(str(path)).module()

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


class ExportedProgram(Target):
    """A real runtime, small enough to define in a test: torch.export's serialized program, run by torch."""

    name = "pt2"
    title = "torch.export program"
    suffix = ".pt2"
    schemes = (Scheme("int8", INT8, calibrated=True, simulated=True),)
    packages = ("torch",)
    runtime_package = "torch"
    runtime_module = "torch.export"

    def export(self, model, example, path, opts):
        if opts.quant is not None:
            from edgekit.quantize import int8_quantizer, pt2e

            model = pt2e(model, example, int8_quantizer(False, opts.quant.float_layers), opts.quant.calib)
        ep = torch.export.export(model, (example,))
        with open(path, "wb") as f:
            torch.export.save(ep, f)
        out = model(example)
        shape = [int(s) for s in out.shape]
        return ExportInfo(
            inputs=[{"name": "input", "shape": list(example.shape), "dtype": "float32"}],
            outputs=[{"name": "logits", "shape": shape, "dtype": "float32"}],
            extra={"nodes": len(ep.graph.nodes)},
        )

    def load(self, path, manifest, threads=None):
        return _ProgramRunner(path)

    def op_profile(self, path, x, threads):
        return [{"op": "whole program", "module": None, "count": 1, "ms": 1.0, "share": 1.0}]


DEVICE = """
name: pt2-host
target: pt2
device: host
description: torch.export programs run by torch on this machine
threads: 1
profile:
  via: host
"""


@pytest.fixture
def toy_target(tmp_path, monkeypatch):
    register(ExportedProgram)
    devices = tmp_path / "targets"
    devices.mkdir()
    (devices / "pt2-host.yaml").write_text(DEVICE)
    monkeypatch.setenv("EDGEKIT_TARGETS", str(devices))
    monkeypatch.setenv("EDGEKIT_DB", str(tmp_path / "latency.sqlite"))
    yield get_target("pt2")
    unregister("pt2")


def test_registered_target_compiles_verifies_and_profiles(toy_target, user_model_file, tmp_path):
    assert "pt2" in target_names()
    r = edgekit.compile(f"{user_model_file}:TinyNet", "pt2", input_size=32, out=tmp_path / "out")
    assert r.artifact.name == "TinyNet.pt2" and r.artifact.is_file()
    m = r.manifest
    assert m["target"] == "pt2" and m["nodes"] > 5
    assert m["verification"]["status"] == "passed", m["verification"]
    assert m["tool_versions"]["torch"] == torch.__version__
    assert edgekit.verify(r.artifact, f"{user_model_file}:TinyNet")["status"] == "passed"

    from edgekit.profile import profile

    report = profile(r.artifact, runs=3, warmup=1, per_op=True)
    assert report["runtime"]["name"] == "pt2" and report["runtime"]["version"] == torch.__version__
    assert report["threads"] == 1 and len(report["samples_ms"]) == 3
    assert report["ops"][0]["op"] == "whole program"


def test_registered_target_quantizes_with_its_own_scheme(toy_target, user_model_file, tmp_path):
    r = edgekit.compile(
        f"{user_model_file}:TinyNet", "pt2", input_size=32, out=tmp_path, quantize="int8", calib="digits", calib_size=32
    )
    q = r.manifest["quantization"]
    assert q["scheme"] == "int8" and q["calibration"]["samples"] == 32
    assert r.manifest["verification"]["status"] == "passed"
    with pytest.raises(EdgekitError, match="target 'pt2' has no quantization scheme 'w8'.*it is a scheme of coreml"):
        edgekit.compile(f"{user_model_file}:TinyNet", "pt2", input_size=32, out=tmp_path, quantize="w8")


def test_registered_target_runs_in_a_recipe(toy_target, user_model_file, tmp_path):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(f"""
name: toy
model: {{ref: "{user_model_file}:TinyNet", input_size: 32}}
compile: [pt2]
profile: {{runs: 3, warmup: 1}}
""")
    from edgekit.recipe import run

    result = run(recipe, tmp_path / "run")
    steps = {s["name"]: s for s in result.manifest["steps"]}
    assert steps["compile-pt2"]["status"] == "ran", steps
    assert steps["profile-pt2"]["status"] == "ran", steps
    assert (tmp_path / "run" / "artifacts" / "toy.pt2").is_file()
    report = json.loads((tmp_path / "run" / "artifacts" / "toy.pt2.latency.json").read_text())
    assert report["runtime"]["name"] == "pt2"


def test_registered_target_is_in_the_cli_and_the_report_schema(toy_target, user_model_file, tmp_path):
    from edgekit.profile import schema

    assert "pt2" in schema()["properties"]["runtime"]["properties"]["name"]["enum"]
    proc = run_cli(
        "compile", f"{user_model_file}:TinyNet", "--target", "pt2", "--input-size", "32", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "TinyNet.pt2.json").is_file()


def test_unregistered_target_is_one_line(user_model_file, tmp_path):
    assert "pt2" not in target_names()
    proc = run_cli("compile", f"{user_model_file}:TinyNet", "--target", "pt3", "--out", str(tmp_path))
    assert_user_error(proc, "unknown target 'pt3'", "choose one of: coreml")
    with pytest.raises(TypeError, match="not a Target subclass"):
        register(dict)
