"""Compile every zoo model for every target, verify against PyTorch, and check manifests and failures."""

from __future__ import annotations

import json
import platform

import pytest
import torch

import edgekit
from edgekit.compile import manifest_path, target_names
from edgekit.errors import EdgekitError, UnsupportedOperatorError, VerificationError
from edgekit.io import sha256_of

from .conftest import assert_user_error, copied, randomize, run_cli
from .test_zoo import ZOO

SMALL = 32  # the zoo downsamples by 32: the smallest input every model takes
RUNS_HERE = {"onnx", "tflite", "executorch"}


def check_manifest(result, target: str, size: int, classes: int) -> dict:
    m = json.loads(result.manifest_path.read_text())
    assert m == json.loads(json.dumps(result.manifest))
    assert m["target"] == target and m["artifact"] == result.artifact.name
    assert m["sha256"] == sha256_of(result.artifact) and m["bytes"] > 0
    assert m["inputs"][0]["shape"][-2:] == [size, size]
    assert m["outputs"][0]["shape"][-1] == classes
    assert m["preprocessing"]["size"] == size and len(m["preprocessing"]["mean"]) == 3
    assert {"torch", "python"} <= set(m["tool_versions"])
    v = m["verification"]
    if target in RUNS_HERE or platform.system() == "Darwin":
        assert v["status"] == "passed", v
        assert v["max_abs_err"] <= v["max_abs_bound"]
        assert v["cosine_min"] >= v["tolerance"]["min_cosine"] or not v["cosine_checked"]
    else:
        assert v["status"] == "skipped" and "macOS" in v["reason"]
    return m


# The smallest model of each family runs by default; the larger sizes share its blocks and take 4x the time.
SMALLEST = ("mobilevig_ti", "greedyvig_s", "mobileone_s0", "mobilenetv2_100")
ZOO_CASES = [n if n in SMALLEST else pytest.param(n, marks=pytest.mark.heavy) for n in ZOO]


@pytest.mark.parametrize("target", target_names())
@pytest.mark.parametrize("name", ZOO_CASES)
@pytest.mark.xdist_group("zoo_compiled")  # the verify tests below take two of these artifacts
def test_every_zoo_model_compiles_and_verifies(name, target, shared_compile):
    result = shared_compile(name, target, input_size=SMALL, num_classes=10)
    m = check_manifest(result, target, SMALL, 10)
    assert m["model"]["reference"] == name
    if target == "executorch":
        assert m["delegate"] == "xnnpack"
        assert m["delegation"]["coverage"] > 0.9


@pytest.mark.parametrize("target", target_names())
@pytest.mark.parametrize("name", ["mobilevig_ti", "greedyvig_s"])
def test_graph_blocks_survive_conversion_with_real_numbers(name, target, tmp_path):
    """At 128 the graph blocks roll and mask for real; random BN stats and layer scales make every branch count."""
    model = randomize(edgekit.create_model(name, num_classes=10))
    result = edgekit.compile(model, target, input_size=128, out=tmp_path, name=name)
    m = check_manifest(result, target, 128, 10)
    if m["verification"]["status"] == "passed":
        assert m["verification"]["reference_max_abs"] > 0.02  # the comparison is not of near-zero logits
        assert m["verification"]["cosine_checked"]
    if target == "executorch" and name == "mobilevig_ti":
        # One XNNPACK partition: nothing of MobileViG runs on the portable kernels.
        d = m["delegation"]
        assert d["delegated_subgraphs"] == 1 and d["not_delegated_ops"] == [] and d["coverage"] == 1.0


def test_user_network_by_path_compiles_for_every_target(user_model_file, tmp_path):
    for target in target_names():
        proc = run_cli(
            "compile",
            f"{user_model_file}:TinyNet",
            "--target",
            target,
            "--input-size",
            "32",
            "--out",
            str(tmp_path),
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        m = json.loads(proc.stdout)
        assert m["model"]["family"] == "user" and m["outputs"][0]["shape"] == [1, 5]
        assert (tmp_path / m["artifact"]).exists() and manifest_path(tmp_path / m["artifact"]).exists()


def test_coreml_program_structure(tmp_path):
    import coremltools as ct

    r16 = edgekit.compile("mobilenetv2_100", "coreml", input_size=64, out=tmp_path, name="fp16")
    r17 = edgekit.compile(
        "mobilenetv2_100",
        "coreml",
        input_size=64,
        out=tmp_path,
        name="ios17",
        precision="fp32",
        min_deployment_target="iOS17",
        image_input=True,
    )
    assert r16.artifact.suffix == ".mlpackage" and r16.artifact.is_dir()
    spec16 = ct.models.MLModel(str(r16.artifact), skip_model_load=True).get_spec()
    spec17 = ct.models.MLModel(str(r17.artifact), skip_model_load=True).get_spec()
    assert spec16.WhichOneof("Type") == "mlProgram"
    assert spec16.specificationVersion == 7 and spec17.specificationVersion == 8
    assert r16.manifest["compute_precision"] == "fp16" and r16.manifest["options"]["precision"] == "fp16"
    assert r16.manifest["op_types"]["conv"] == 52
    assert spec17.description.input[0].type.WhichOneof("Type") == "imageType"
    assert r17.manifest["inputs"][0]["dtype"] == "image_rgb_uint8" and r17.manifest["preprocessing"]["baked_in"]


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML runs on macOS only")
def test_coreml_numerics_on_macos(tmp_path):
    model = randomize(edgekit.create_model("mobilevig_ti", num_classes=10))
    for image_input in (False, True):
        r = edgekit.compile(
            model, "coreml", input_size=128, out=tmp_path, name=f"img{image_input}", image_input=image_input
        )
        assert r.verification["status"] == "passed", r.verification


def test_executorch_coreml_delegate_lowers_here(tmp_path):
    r = edgekit.compile("mobilenetv2_100", "executorch", input_size=64, out=tmp_path, delegate="coreml")
    assert r.artifact.name == "mobilenetv2_100.coreml.pte"
    assert r.manifest["delegate"] == "coreml" and r.manifest["delegation"]["coverage"] > 0.9
    if platform.system() != "Darwin":
        assert r.verification["status"] == "skipped" and "Apple" in r.verification["reason"]


@pytest.mark.parametrize("target", target_names())
def test_operator_a_target_cannot_lower_is_named(user_model_file, target, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "compile", f"{user_model_file}:UsesErfinv", "--target", target, "--input-size", "16", "--out", str(out)
    )
    assert_user_error(proc, f"target '{target}' cannot lower operator", "erf", "in module 'head'")
    assert not out.exists()


def test_verification_breach_fails_compile_and_leaves_nothing(user_model_file, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "compile", f"{user_model_file}:ExportsDifferently", "--target", "onnx", "--input-size", "16", "--out", str(out)
    )
    assert_user_error(proc, "differs from PyTorch beyond tolerance", "nothing was written")
    assert not out.exists()


def test_python_api_raises_on_breach(user_model_file, tmp_path):
    from edgekit.models import load_model

    model = load_model(f"{user_model_file}:ExportsDifferently").model
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VerificationError):
        edgekit.compile(model, "onnx", input_size=16, out=out)
    assert list(out.iterdir()) == []
    r = edgekit.compile(model, "onnx", input_size=16, out=out, verify=False)
    assert r.manifest["verification"]["status"] == "not run"


@pytest.mark.xdist_group("zoo_compiled")
def test_verify_command(shared_compile, tmp_path):
    r = copied(shared_compile("mobileone_s0", "tflite", input_size=SMALL, num_classes=10), tmp_path)  # changed below
    proc = run_cli("verify", str(r.artifact), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "passed"
    # against another network: a breach, exit 2
    proc = run_cli("verify", str(r.artifact), "--model", "mobilenetv2_100")
    assert proc.returncode == 2 and "differs from PyTorch" in proc.stderr and "Traceback" not in proc.stderr
    # an artifact changed after compiling
    data = bytearray(r.artifact.read_bytes())
    data[-100] ^= 0xFF
    r.artifact.write_bytes(bytes(data))
    assert_user_error(run_cli("verify", str(r.artifact)), "does not match the sha256")
    assert_user_error(run_cli("verify", str(tmp_path / "missing.tflite")), "does not exist")


@pytest.mark.xdist_group("zoo_compiled")
def test_python_api_verify(shared_compile):
    r = shared_compile("mobilenetv2_100", "executorch", input_size=SMALL, num_classes=10)  # rebuilt with 10 classes
    result = edgekit.verify(r.artifact, "mobilenetv2_100", samples=2)
    assert result["status"] == "passed" and result["samples"] == 2


def test_bad_input_one_line_exit_2(tmp_path):
    out = tmp_path / "out"
    assert_user_error(
        run_cli("compile", "mobilevig_tii", "--target", "onnx", "--out", str(out)),
        "unknown model 'mobilevig_tii'",
        "did you mean mobilevig_ti",
    )
    assert_user_error(
        run_cli("compile", "mobilevig_ti", "--target", "tfl", "--out", str(out)), "unknown target 'tfl'", "tflite"
    )
    assert_user_error(
        run_cli("compile", "mobilevig_ti", "--target", "onnx", "--delegate", "xnnpack", "--out", str(out)),
        "--delegate applies to --target executorch only",
    )
    assert_user_error(
        run_cli("compile", "mobilevig_ti", "--target", "coreml", "--min-target", "iOS9", "--out", str(out)),
        "unknown minimum deployment target 'iOS9'",
    )
    assert_user_error(run_cli("compile", "nofile.py:Net", "--target", "onnx", "--out", str(out)), "does not exist")
    assert not out.exists()


def test_compile_errors_are_edgekit_errors():
    with pytest.raises(EdgekitError):
        edgekit.compile("mobilevig_ti", "tensorrt")
    assert issubclass(UnsupportedOperatorError, EdgekitError)


def test_user_model_is_not_modified_by_compile(tmp_path):
    model = randomize(edgekit.create_model("mobileone_s0", num_classes=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = edgekit.compile(model, "onnx", input_size=32, out=tmp_path)
    assert not model.is_reparameterized
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert r.artifact.name == "MobileOne.onnx" and r.manifest["model"]["num_classes"] == 4
    # nothing in the manifest can rebuild a module handed over in Python: verify asks for it
    assert_user_error(run_cli("verify", str(r.artifact)), "compiled from a Python module", "--model")
    assert edgekit.verify(r.artifact, model)["status"] == "passed"


@pytest.mark.heavy
@pytest.mark.parametrize("target", target_names())
@pytest.mark.parametrize("name", ["mobilevig_ti", "greedyvig_s", "mobileone_s0"])
def test_full_size_compile_verifies(name, target, tmp_path):
    model = randomize(edgekit.create_model(name))
    result = edgekit.compile(model, target, out=tmp_path, name=name)
    check_manifest(result, target, 224, 1000)
