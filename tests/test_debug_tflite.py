"""`TFLite.capture`: the LiteRT artifact's intermediate values by the user's module path, against PyTorch's.

The artifacts are test_compile's (`shared_compile`, the same call and xdist group): one conversion per model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit
from edgekit.compile import get_target
from edgekit.compile.capture import module_outputs, module_path
from edgekit.compile.export import prepare_for_export

SMALL = 32
MODELS = ("mobileone_s0", "mobilenetv2_100", "mobilevig_ti", "greedyvig_s")  # test_compile's SMALLEST
RTOL = 1e-3

# Leaf modules whose output has a value of its own in the artifact, of all leaves PyTorch's hooks see (at 32 px).
# The rest have none: a conv or BN fused into the op after it (conv+BN+ReLU -> one CONV_2D named by the ReLU),
# Identity and Dropout (no op), ViG's average pool over a 1x1 map (folded away).
LEAF_COVERAGE = {
    "mobileone_s0": 46 / 132,
    "mobilenetv2_100": 55 / 143,
    "mobilevig_ti": 65 / 113,
    "greedyvig_s": 123 / 207,
}

pytestmark = pytest.mark.xdist_group("zoo_compiled")


def _input(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(seed))


def _reference(net: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """PyTorch's module outputs by the user's path, in the order the modules finish."""
    return {module_path(k): v for k, v in module_outputs(net, x).items()}


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-6))


def _leaves(ref: dict) -> list[str]:
    return [k for k in ref if not any(o.startswith(k + ".") for o in ref)]


@pytest.fixture
def compiled(shared_compile):
    def get(name: str):
        return shared_compile(name, "tflite", input_size=SMALL, num_classes=10)

    return get


@pytest.mark.parametrize("name", MODELS)
def test_capture_agrees_with_pytorch_module_by_module(name, compiled):
    result = compiled(name)
    x = _input()
    ref = _reference(prepare_for_export(edgekit.create_model(name, num_classes=10)), x)
    got = get_target("tflite").capture(result.artifact, result.manifest, x.numpy())
    assert got is not None
    # every value is named by a module PyTorch has, in PyTorch's shape and layout (NCHW), as float32
    assert set(got) <= set(ref), sorted(set(got) - set(ref))
    assert all(got[k].shape == ref[k].shape and got[k].dtype == np.float32 for k in got)
    bad = {k: _rel_err(ref[k], got[k]) for k in got if _rel_err(ref[k], got[k]) > RTOL}
    assert not bad, bad
    # every module that holds others has its output; of the leaves, those the converter did not fuse away
    leaves = _leaves(ref)
    assert [k for k in ref if k not in leaves and k not in got] == []
    covered = sum(k in got for k in leaves) / len(leaves)
    assert covered >= LEAF_COVERAGE[name] - 1e-9, f"{name}: {covered:.2f} of {len(leaves)} leaves"
    assert "model" in got and got["model"].shape == (1, 10)  # the whole network: the graph's output


@pytest.mark.parametrize("name", ["mobileone_s0", "mobilevig_ti"])
def test_capture_with_the_model_in_hand_or_names_alone(name, compiled):
    """The module tree from the model given equals the one rebuilt from the manifest; without either, the names'
    last parts give the paths: all of MobileOne's (every container called), few of MobileViG's (a ModuleList)."""
    result = compiled(name)
    x = _input(1)
    net = prepare_for_export(edgekit.create_model(name, num_classes=10))
    ref = _reference(net, x)
    target = get_target("tflite")
    rebuilt = target.capture(result.artifact, result.manifest, x.numpy())
    in_hand = target.capture(result.artifact, result.manifest, x.numpy(), model=net)
    assert rebuilt is not None and in_hand is not None
    assert rebuilt.keys() == in_hand.keys() and all(np.array_equal(rebuilt[k], in_hand[k]) for k in rebuilt)

    no_model = dict(result.manifest, model=dict(result.manifest["model"], reference=None))
    named = target.capture(result.artifact, no_model, x.numpy())
    assert named is not None
    # without the model's shapes a value keeps the artifact's (`gap`: [1, C], not [1, C, 1, 1]), NCHW where 4D
    same = [k for k in named if k in ref and np.squeeze(named[k]).shape == np.squeeze(ref[k]).shape]
    assert all(_rel_err(ref[k], named[k].reshape(ref[k].shape)) <= RTOL for k in same)
    if name == "mobileone_s0":
        assert set(rebuilt) <= set(same)
    else:
        assert len(same) < len(rebuilt) / 4


@pytest.mark.parametrize(
    ("name", "layer", "first"),
    [
        # a BN whose output the artifact has (its conv is fused into it): the breach is the layer itself
        ("mobilevig_ti", "local_backbone.3.mlp.norm1", ("local_backbone.3.mlp.norm1",)),
        # a conv fused with its ReLU has no value of its own: the first breach is that ReLU, in the conv's block
        ("mobileone_s0", "stage2.3.reparam_conv", ("stage2.3.act", "stage2.3")),
    ],
)
def test_a_layer_computed_wrong_is_the_first_module_that_breaks(name, layer, first, compiled):
    """The artifact is compiled from the zoo model; the PyTorch model then gets one layer's weights changed, so the
    two differ from that layer on: the first module (in PyTorch's order) that breaks is where it is."""
    result = compiled(name)
    x = _input(2)
    net = prepare_for_export(edgekit.create_model(name, num_classes=10))
    with torch.no_grad():
        for p in net.get_submodule(f"model.{layer}").parameters():
            p.mul_(1.5).add_(0.1)
    ref = _reference(net, x)
    got = get_target("tflite").capture(result.artifact, result.manifest, x.numpy())
    assert got is not None
    compared = [k for k in ref if k in got]
    broken = [k for k in compared if _rel_err(ref[k], got[k]) > RTOL]
    assert broken and broken[0] in first, broken[:3]
    before = compared[: compared.index(broken[0])]
    assert len(before) > 10 and all(_rel_err(ref[k], got[k]) <= RTOL for k in before)
