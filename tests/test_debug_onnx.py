"""`Onnx.capture`: an ONNX artifact's intermediate values by module, lined up against PyTorch's (`edgekit debug`).

The PyTorch side is the model in the form it is exported in (`export_form`: MobileOne reparameterized, layer scales
folded), whose modules are the ones the artifact's nodes were exported from.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgekit.compile.capture import module_outputs, module_path
from edgekit.compile.onnx import NAME_SCOPES, Onnx, node_module
from edgekit.models.deploy import export_form

from .conftest import leaves, leaves_without_value, randomized_compiles, zoo_input

SIZE = 32
MODELS = ("mobilenetv2_100", "mobilevig_ti", "mobileone_s0", "greedyvig_s")
REL = 1e-3  # fp32: the largest difference relative to the largest magnitude of PyTorch's value


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return randomized_compiles(tmp_path_factory.mktemp("debug_onnx"), "onnx", SIZE)


def example(seed: int = 1) -> torch.Tensor:
    return zoo_input(SIZE, seed)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-6))


@pytest.mark.parametrize("name", MODELS)
def test_capture_covers_the_modules_and_agrees_with_pytorch(name, compiled):
    model, result = compiled(name)
    x = example()
    got = Onnx().capture(result.artifact, result.manifest, x.numpy())
    assert got is not None
    ref = module_outputs(export_form(model), x)
    leaf = leaves(ref)
    missing = [k for k in leaf if k not in got]
    no_node = leaves_without_value(export_form(model), ref, got)
    # Every leaf without a value is one the artifact has no node of; of the others, (nearly) all have one.
    assert set(missing) <= no_node, sorted(set(missing) - no_node)
    can = [k for k in leaf if k not in no_node]
    assert sum(k in got for k in can) >= 0.9 * len(can)
    assert len(leaf) - len(missing) >= 0.55 * len(leaf)  # all leaves, folded convolutions included
    # Values: every module both sides have, with the same shape, agrees (fp32).
    same = [k for k in ref if k in got and ref[k].shape == got[k].shape]
    assert len(same) >= 0.9 * len([k for k in ref if k in got])
    bad = {k: rel_error(ref[k], got[k]) for k in same if rel_error(ref[k], got[k]) > REL}
    assert not bad, bad
    assert all(v.dtype == np.float32 for v in got.values())


def test_the_artifact_keeps_every_nodes_module_scope(compiled):
    _, result = compiled("greedyvig_s")
    graph = onnx.load(str(result.artifact)).graph
    scopes = [node_module(n) for n in graph.node]
    assert all(s is not None for s in scopes)
    assert sum(s.startswith("model.") for s in scopes if s) >= 0.95 * len(scopes)


def test_a_module_called_twice_gives_its_first_call(compiled):
    """MobileViG's MLP applies one GELU twice; PyTorch's hooks keep the first call, and so does capture."""
    model, result = compiled("mobilevig_ti")
    x = example()
    got = Onnx().capture(result.artifact, result.manifest, x.numpy())
    ref = module_outputs(export_form(model), x)
    act = "local_backbone.0.mlp.act"
    assert act in got and got[act].shape == ref[act].shape
    assert rel_error(ref[act], got[act]) <= REL


@pytest.mark.parametrize("name", MODELS)
def test_a_seeded_defect_is_the_first_module_that_differs(name, compiled, tmp_path):
    model, result = compiled(name)
    proto = onnx.load(str(result.artifact))
    convs = [n for n in proto.graph.node if n.op_type == "Conv" and (node_module(n) or "").startswith("model.")]
    node = convs[len(convs) // 2]  # a convolution in the middle of the network
    layer = module_path(node_module(node) or "")
    weight = node.input[1]
    assert sum(weight in n.input for n in proto.graph.node) == 1  # the defect stays in this one layer
    init = next(i for i in proto.graph.initializer if i.name == weight)
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * -3.0, weight))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))

    x = example()
    got = Onnx().capture(broken, result.manifest, x.numpy())
    assert got is not None
    ref = module_outputs(export_form(model), x)
    compared = [k for k in ref if k in got and ref[k].shape == got[k].shape]
    errors = [rel_error(ref[k], got[k]) for k in compared]
    first = next(i for i, e in enumerate(errors) if e > REL)
    assert compared[first] in (layer, layer.rsplit(".", 1)[0]), (compared[first], layer)
    assert first > 10 and max(errors[:first]) <= REL  # everything before it agrees


def test_an_artifact_without_module_scopes_gives_none(compiled, tmp_path):
    _, result = compiled("mobilenetv2_100")
    proto = onnx.load(str(result.artifact))
    for n in proto.graph.node:
        kept = [p for p in n.metadata_props if p.key != NAME_SCOPES]
        del n.metadata_props[:]
        n.metadata_props.extend(kept)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    assert Onnx().capture(bare, result.manifest, example().numpy()) is None
