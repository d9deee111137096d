"""`CoreML.capture` and `coreml_op_modules`: a Core ML artifact's operations by module, and (on macOS) its
intermediate values lined up against PyTorch's (`edgekit debug`).

The op-to-module mapping is read off macOS (the manifest's `op_modules`, recorded at export from the exported
program's `nn_module_stack`); Core ML runs on macOS only, so the numeric tests are marked `macos`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import platform

import numpy as np
import pytest
import torch

from edgekit.compile.capture import module_outputs
from edgekit.compile.coreml import OP_MODULES, CoreML, capture_plan, coreml_capture, coreml_op_modules, program_ops
from edgekit.compile.debugging import debug
from edgekit.errors import EdgekitError
from edgekit.models.deploy import export_form

from .conftest import assert_user_error, leaves, leaves_without_value, randomized_compiles, run_cli, zoo_input

SIZE = 32
MODELS = ("mobilenetv2_100", "mobilevig_ti", "mobileone_s0", "greedyvig_s")
MACOS = platform.system() == "Darwin"
pytestmark = pytest.mark.xdist_group("debug_coreml")  # one worker compiles each model once


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return randomized_compiles(tmp_path_factory.mktemp("debug_coreml"), "coreml", SIZE)


def example(seed: int = 1) -> torch.Tensor:
    return zoo_input(SIZE, seed)


@pytest.mark.parametrize("name", MODELS)
def test_every_op_of_the_program_has_its_module(name, compiled):
    model, result = compiled(name)
    ops = program_ops(result.artifact)
    mapping = coreml_op_modules(result.artifact)
    assert len(ops) > 50
    assert sum(n in mapping for n, _, _ in ops) >= 0.95 * len(ops)  # non-const ops; all of them, as compiled here
    modules = {k for k, _ in export_form(model).named_modules() if k} | {"model"}  # `model`: its own forward
    assert set(mapping.values()) <= modules, sorted(set(mapping.values()) - modules)
    assert list(mapping) == [n for n, _, _ in ops if n in mapping]  # program order
    assert json.loads(result.manifest_path.read_text())[OP_MODULES]  # recorded in the manifest


def test_known_modules_of_mobilenetv2(compiled):
    _, result = compiled("mobilenetv2_100")
    types = {n: t for n, t, _ in program_ops(result.artifact)}
    by_module: dict[str, list[str]] = {}
    for op, module in coreml_op_modules(result.artifact).items():
        by_module.setdefault(module, []).append(types[op])
    # the last block's projection: conv.2's convolution with its BatchNorm (conv.3) fused in, under the BatchNorm
    assert by_module["features.16.conv.3"] == ["conv"]
    assert "features.16.conv.2" not in by_module
    assert by_module["features.16"] == ["add"]  # the residual
    assert by_module["features.18.2"] == ["clip"]  # ReLU6
    assert by_module["classifier.1"] == ["linear"]
    plan = capture_plan(result.artifact, result.manifest)
    assert plan["classifier.1"] == plan["model"] == result.manifest["outputs"][0]["name"]


@pytest.mark.parametrize("name", MODELS)
def test_the_capture_plan_covers_the_modules(name, compiled):
    """Off macOS: which op's value each module gets; every leaf module without one is one the program has no op
    of, and the values have PyTorch's shapes (a stand-in runtime gives zeros of each op's static shape)."""
    model, result = compiled(name)
    plan = capture_plan(result.artifact, result.manifest)
    ref = module_outputs(export_form(model), example())
    leaf = leaves(ref)
    missing = [k for k in leaf if k not in plan]
    no_op = leaves_without_value(export_form(model), ref, plan)
    assert set(missing) <= no_op, sorted(set(missing) - no_op)
    assert len([k for k in ref if k in plan]) >= 0.6 * len(ref)
    got = _stand_in_capture(result)
    assert set(got) == set(plan)
    same = [k for k in ref if k in got and got[k].shape == ref[k].shape]
    assert len(same) >= 0.95 * len([k for k in ref if k in got]), [k for k in ref if k in got and k not in same]
    assert all(v.dtype == np.float32 for v in got.values())


def test_a_module_called_twice_gives_its_first_call(compiled):
    """MobileViG's MLP applies one GELU twice; PyTorch's hooks keep the first call, and so does the plan."""
    _, result = compiled("mobilevig_ti")
    act = "local_backbone.0.mlp.act"
    ops = [op for op, module in coreml_op_modules(result.artifact).items() if module == act]
    assert len(ops) == 2
    assert capture_plan(result.artifact, result.manifest)[act] == ops[0]


def test_an_artifact_without_op_modules_gives_none(compiled):
    _, result = compiled("mobilenetv2_100")
    manifest = {k: v for k, v in result.manifest.items() if k != OP_MODULES}
    assert coreml_op_modules(result.artifact, manifest) == {}
    assert capture_plan(result.artifact, manifest) == {}
    assert coreml_capture(result.artifact, manifest, example().numpy()) is None


def test_capture_inside_a_running_event_loop(compiled):
    """A notebook runs an event loop; Core ML's inspector is async: capture runs it in a thread of its own."""
    _, result = compiled("mobilenetv2_100")

    async def in_a_loop():
        return _stand_in_capture(result)

    assert asyncio.run(in_a_loop()).keys() == capture_plan(result.artifact, result.manifest).keys()


def test_a_prediction_that_fails_is_one_error(compiled):
    _, result = compiled("mobilenetv2_100")
    with pytest.raises(EdgekitError, match="Core ML could not give the intermediate values of .*: no ANE today"):
        _stand_in_capture(result, fail=RuntimeError("no ANE today\nsecond line"))


@pytest.mark.skipif(MACOS, reason="off macOS only")
def test_debug_off_macos_is_one_line(compiled):
    _, result = compiled("mobilenetv2_100")
    assert CoreML().capture(result.artifact, result.manifest, example().numpy()) is None
    proc = run_cli("debug", str(result.artifact), "--model", "mobilenetv2_100")
    assert_user_error(proc, "cannot run", "Core ML models run on macOS only")


# -- macOS: Core ML's values ---------------------------------------------------------------------------------------


@pytest.mark.macos
@pytest.mark.skipif(not MACOS, reason="Core ML runs on macOS only")
@pytest.mark.parametrize("name", MODELS)
def test_capture_agrees_with_pytorch_on_macos(name, compiled):
    model, result = compiled(name)
    x = example()
    got = CoreML().capture(result.artifact, result.manifest, x.numpy())
    assert got is not None
    ref = module_outputs(export_form(model), x)
    same = [k for k in ref if k in got and ref[k].shape == got[k].shape]
    assert len(same) >= 0.9 * len([k for k in ref if k in got]) and len(same) > 50
    # fp16: within a few per cent of each value's largest magnitude, direction kept
    for k in same:
        a, b = ref[k].astype(np.float64).ravel(), got[k].astype(np.float64).ravel()
        assert np.abs(a - b).max() <= 0.05 * max(np.abs(a).max(), 1e-3), k
        assert a @ b >= 0.99 * np.linalg.norm(a) * np.linalg.norm(b), k


@pytest.mark.macos
@pytest.mark.skipif(not MACOS, reason="Core ML runs on macOS only")
def test_a_seeded_defect_is_the_first_module_that_differs_on_macos(compiled):
    """The artifact against its model with one layer's weights changed (as `debug --model --weights` does): that
    layer is the first module that breaks the tolerance (its BatchNorm, which the artifact's op is fused with)."""
    model, result = compiled("mobilenetv2_100")
    assert debug(result.artifact, model, samples=1)["first_breach"] is None
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.features[16].conv[2].weight.mul_(-3.0)
    r = debug(result.artifact, bad, samples=1)
    assert r["first_breach"]["module"].startswith("features.16.conv.3"), r["first_breach"]
    order = [row["module"] for row in r["rows"]]
    first = order.index(r["first_breach"]["module"])
    assert first > 10 and not any(row["breach"] for row in r["rows"][:first])  # everything before it agrees


def _stand_in_capture(result, fail: Exception | None = None) -> dict[str, np.ndarray]:
    """`coreml_capture` with a stand-in for Core ML's prediction (which needs macOS): each requested op's value is
    fp16 zeros of its static shape in the program (or the prediction raises `fail`)."""
    from coremltools.models.ml_program.experimental import debugging_utils

    from edgekit.compile.coreml import import_coremltools

    spec = import_coremltools().utils.load_spec(str(result.artifact))
    shapes = {}
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            for o in op.outputs:
                if o.type.WhichOneof("type") == "tensorType":
                    shapes[o.name] = tuple(d.constant.size for d in o.type.tensorType.dimensions)

    async def outputs(self, inputs, output_names, **_):
        assert list(inputs) == [result.manifest["inputs"][0]["name"]]
        await asyncio.sleep(0)
        if fail is not None:
            raise fail
        return {n: np.zeros(shapes[n], np.float16) for n in output_names}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(debugging_utils.MLModelInspector, "retrieve_outputs", outputs)
        got = coreml_capture(result.artifact, result.manifest, example().numpy())
    assert got is not None
    return got
