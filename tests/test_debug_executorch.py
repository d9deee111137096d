"""`ExecuTorch.capture`: a .pte program's intermediate values by module, lined up against PyTorch's (`edgekit debug`).

The runtime keeps what each instruction outputs (ETDump's debug buffer); the ETRecord compile writes beside the
program names each value's module. With `--delegate none` every operator is an instruction, so every module that
computes something has a value; with XNNPACK (the default) only what each delegate call outputs: a model XNNPACK
takes whole gives its logits alone, one it splits (the graph convolutions at 32 px) the values at the splits.

The PyTorch side is the model in the form it is exported in (`prepare_for_export`: MobileOne reparameterized,
layer scales folded), whose modules are the ones the program's nodes were traced in.
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.compile import CompileOptions, get_target, prepare_for_export, read_manifest
from edgekit.compile.base import side_file
from edgekit.compile.capture import module_outputs
from edgekit.compile.executorch import ETRECORD_SUFFIX, ExecuTorch
from edgekit.errors import ArtifactError, VerificationError
from edgekit.io import sha256_of

from .conftest import copied, randomize, randomized_compiles, zoo_input

SIZE = 32
REL = 1e-3  # fp32: the largest difference relative to the largest magnitude of PyTorch's value
TARGET = get_target("executorch")

# The smallest model of each family; two of them by default (a plain CNN; MobileViG: a shared activation called
# twice per block, and XNNPACK split in three around the graph convolutions at 32 px), the others with -m heavy.
CASES = [
    ("mobilenetv2_100", "none"),
    ("mobilenetv2_100", "xnnpack"),
    ("mobilevig_ti", "none"),
    ("mobilevig_ti", "xnnpack"),
    pytest.param("mobileone_s0", "none", marks=pytest.mark.heavy),
    pytest.param("mobileone_s0", "xnnpack", marks=pytest.mark.heavy),
    pytest.param("greedyvig_s", "none", marks=pytest.mark.heavy),
    pytest.param("greedyvig_s", "xnnpack", marks=pytest.mark.heavy),
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(name, delegate) -> (model, compile result), each compiled once (random BatchNorm statistics)."""
    get = randomized_compiles(tmp_path_factory.mktemp("debug_executorch"), "executorch", SIZE, verify=False)
    return lambda name, delegate: get(name, delegate=delegate)


def example(seed: int = 1) -> torch.Tensor:
    return zoo_input(SIZE, seed)


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6))


def reference(model: nn.Module) -> nn.Module:
    """The user's model as it was exported (the export wrapper's `.model`)."""
    return prepare_for_export(model).model


def computing_leaves(net: nn.Module) -> list[str]:
    """Leaf modules that compute something in evaluation (Identity leaves no op in the program)."""
    return [n for n, m in net.named_modules() if n and not list(m.children()) and not isinstance(m, nn.Identity)]


@pytest.mark.parametrize(("name", "delegate"), CASES)
def test_capture_gives_module_values_that_agree_with_pytorch(name, delegate, compiled):
    model, result = compiled(name, delegate)
    x = example()
    got = TARGET.capture(result.artifact, read_manifest(result.artifact), x.numpy())
    assert got, "no values"
    net = reference(model)
    ref = module_outputs(net, x)
    modules = dict(net.named_modules())
    assert set(got) <= set(modules) - {""}, set(got) - set(modules)  # user's module paths, no wrapper prefix
    compared = [k for k in got if k in ref and got[k].shape == ref[k].shape]
    bad = {k: rel_error(got[k], ref[k]) for k in compared if rel_error(got[k], ref[k]) > REL}
    assert not bad, bad
    leaves = computing_leaves(net)
    covered = [k for k in leaves if k in compared]
    print(f"{name} --delegate {delegate}: {len(compared)}/{len(ref)} modules, {len(covered)}/{len(leaves)} leaves")
    if delegate == "none":  # every operator is an instruction: every module has its value, with PyTorch's shape
        assert covered == leaves, sorted(set(leaves) - set(covered))
        assert {k for k in ref if k not in got} <= {k for k in ref if isinstance(modules[k], nn.Identity)}
    else:  # values at the delegates' boundaries only
        assert len(covered) < len(leaves) / 4


def test_values_come_from_the_run_not_the_compile(compiled):
    """Two inputs, two sets of values (the program does not replay the example it was compiled with)."""
    model, result = compiled("mobilenetv2_100", "none")
    a = TARGET.capture(result.artifact, result.manifest, example(1).numpy())
    b = TARGET.capture(result.artifact, result.manifest, example(2).numpy())
    assert a is not None and b is not None and a.keys() == b.keys()
    assert not np.allclose(a["features.3"], b["features.3"])
    assert rel_error(b["features.3"], module_outputs(reference(model), example(2))["features.3"]) < REL


def test_a_shared_module_called_twice_is_given_its_first_call(compiled):
    """MobileViG's MLP applies `self.act` twice: PyTorch's side keeps the first call; so does capture."""
    model, result = compiled("mobilevig_ti", "none")
    x = example()
    got = TARGET.capture(result.artifact, result.manifest, x.numpy())
    ref = module_outputs(reference(model), x)
    assert got is not None
    assert rel_error(got["local_backbone.0.mlp.act"], ref["local_backbone.0.mlp.act"]) < REL
    assert rel_error(got["local_backbone.0.mlp"], ref["local_backbone.0.mlp"]) < REL


def test_a_delegate_gives_no_module_an_intermediate_value_of_it(compiled):
    """At 32 px MobileViG's graph convolution is split: its first op runs on the portable kernels, the rest (its
    output) inside a delegate. The module has no value then, rather than the intermediate one the runtime logged."""
    model, result = compiled("mobilevig_ti", "xnnpack")
    d = result.manifest["delegation"]
    assert d["delegated_subgraphs"] > 1, d
    got = TARGET.capture(result.artifact, result.manifest, example().numpy())
    assert got is not None
    assert "backbone.0.0.graph_conv" not in got
    assert {"local_backbone.12", "backbone.0.0.fc1", "backbone.0.1"} <= set(got)


def first_breach(got: dict, ref: dict) -> tuple[str | None, list[str]]:
    """The first module in PyTorch's order (the order modules finish) whose captured value breaks the tolerance,
    and the modules compared before it."""
    before = []
    for k in ref:
        if k in got and got[k].shape == ref[k].shape:
            if rel_error(got[k], ref[k]) > REL:
                return k, before
            before.append(k)
    return None, before


@pytest.mark.parametrize(
    ("name", "delegate", "layer", "found"),
    [
        # every module captured: the broken layer itself
        ("mobilenetv2_100", "none", "features.4.conv.1.0", "features.4.conv.1.0"),
        ("mobilevig_ti", "none", "local_backbone.3.mlp.fc1", "local_backbone.3.mlp.fc1"),
        # XNNPACK: the first value the program gives after it (a delegate's output), every one before agreeing
        ("mobilenetv2_100", "xnnpack", "features.17.conv.2", "classifier.1"),
        ("mobilevig_ti", "xnnpack", "local_backbone.3.mlp.fc1", "local_backbone.12.conv.1"),
        ("mobilevig_ti", "xnnpack", "backbone.0.0.fc1.0", "backbone.0.0.fc1.1"),
    ],
)
def test_a_seeded_defect_is_found_at_its_layer(name, delegate, layer, found, compiled):
    """Change one layer's weights in PyTorch's model only: the first module (in PyTorch's order) that breaks is
    that layer, or, where the program gives no value of it, the first module after it that has one."""
    model, result = compiled(name, delegate)
    x = example()
    got = TARGET.capture(result.artifact, result.manifest, x.numpy())
    assert got is not None
    net = reference(model)
    assert first_breach(got, module_outputs(net, x))[0] is None  # unchanged: everything agrees
    broken = copy.deepcopy(net)
    with torch.no_grad():
        weight = dict(broken.named_modules())[layer].weight
        weight.add_(0.5 * weight.abs().mean() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    ref = module_outputs(broken, x)
    where, before = first_breach(got, ref)
    assert where == found, (where, before[-3:])
    order = list(ref)
    assert order.index(found) >= order.index(layer)  # nothing that finished before the layer breaks


# -- the ETRecord beside the program ----------------------------------------------------------------------------


def test_the_etrecord_is_written_beside_the_program_and_listed(compiled):
    _, result = compiled("mobilenetv2_100", "none")
    entry = result.manifest["side_files"][ETRECORD_SUFFIX]
    path = side_file(result.artifact, ETRECORD_SUFFIX)
    assert entry["file"] == path.name == "mobilenetv2_100.none.pte.etrecord"
    assert path.is_file() and entry["bytes"] == path.stat().st_size and entry["sha256"] == sha256_of(path)
    assert read_manifest(result.artifact)["side_files"][ETRECORD_SUFFIX] == entry
    assert entry["bytes"] < 200_000  # the graph and the debug handles, compressed: not a copy of the weights
    assert sorted(p.name for p in result.artifact.parent.iterdir()) == sorted(
        [result.artifact.name, result.manifest_path.name, path.name]
    )  # nothing half-written left over


def test_a_failed_compile_names_the_module_and_leaves_the_good_etrecord(compiled, tmp_path, monkeypatch):
    """The converter computes one layer wrong: compile's breach names its module, and the folder keeps the program,
    manifest and ETRecord of the good compile before it, byte for byte (the ETRecord is committed with its program,
    after verification)."""
    model, result = compiled("mobilenetv2_100", "none")
    out = tmp_path / "c"
    good = edgekit.compile(model, "executorch", out=out, input_size=SIZE, name="m", delegate="none")
    before = {p.name: sha256_of(p) for p in out.iterdir()}
    assert sorted(before) == ["m.none.pte", "m.none.pte.etrecord", "m.none.pte.json"]
    export = ExecuTorch.export
    layer = "features.16.conv.2"  # late enough to move the logits of the randomized network

    def faulty(self, wrapped, ex, path, opts):  # the artifact's copy of one layer's weights is changed
        wrong = copy.deepcopy(wrapped)
        with torch.no_grad():
            dict(wrong.model.named_modules())[layer].weight.mul_(-3.0)
        return export(self, wrong, ex, path, opts)

    monkeypatch.setattr(ExecuTorch, "export", faulty)
    with pytest.raises(VerificationError, match=f"first diverging module {re.escape(layer)} "):
        edgekit.compile(model, "executorch", out=out, input_size=SIZE, name="m", delegate="none")
    assert {p.name: sha256_of(p) for p in out.iterdir()} == before
    assert good.manifest["side_files"][ETRECORD_SUFFIX]["sha256"] == before["m.none.pte.etrecord"]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.stem(x).mean((2, 3)))


@pytest.mark.parametrize("delegate", ["xnnpack", "none"])
def test_the_etrecord_leaves_the_program_bytes_as_they_were(delegate, tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = prepare_for_export(randomize(Small()))
    example = torch.randn(1, 3, 16, 16)
    path = tmp_path / "small.pte"
    info = TARGET.export(model, example, path, CompileOptions(input_size=16, delegate=delegate))
    assert info.side_files == [ETRECORD_SUFFIX] and (tmp_path / "small.pte.etrecord").is_file()
    partitioner = [XnnpackPartitioner()] if delegate == "xnnpack" else []
    plain = to_edge_transform_and_lower(torch.export.export(model, (example,)), partitioner=partitioner)
    assert path.read_bytes() == plain.to_executorch().buffer


def test_a_program_without_its_etrecord_says_to_compile_again(compiled, tmp_path):
    _, result = compiled("mobilenetv2_100", "none")
    moved = copied(result, tmp_path / "moved")
    etrecord = moved.artifact.with_name(moved.artifact.name + ETRECORD_SUFFIX)
    assert TARGET.capture(moved.artifact, moved.manifest, example().numpy())  # the folder moved whole: fine
    etrecord.write_bytes(etrecord.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="not the ETRecord compiled with"):
        TARGET.capture(moved.artifact, moved.manifest, example().numpy())
    etrecord.unlink()
    with pytest.raises(ArtifactError, match=re.escape("no ETRecord 'mobilenetv2_100.none.pte.etrecord'")):
        TARGET.capture(moved.artifact, moved.manifest, example().numpy())
    etrecord.write_bytes(b"PK\x03\x04 not a zip")
    manifest = {k: v for k, v in moved.manifest.items() if k != "side_files"}  # an artifact from before ETRecords
    with pytest.raises(ArtifactError, match="compile the model again with this edgekit"):
        TARGET.capture(moved.artifact, manifest, example().numpy())
    manifest["side_files"] = {ETRECORD_SUFFIX: {"file": etrecord.name, "bytes": 0, "sha256": sha256_of(etrecord)}}
    with pytest.raises(ArtifactError, match="could not read the ETRecord"):
        TARGET.capture(moved.artifact, manifest, example().numpy())


class Touch:
    """Unpickled in full, it creates a file: what a hostile ETRecord's weights could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_an_etrecord_whose_weights_are_not_tensors_is_refused_unread(compiled, tmp_path):
    _, result = compiled("mobilenetv2_100", "none")
    moved = copied(result, tmp_path / "moved")
    etrecord = moved.artifact.with_name(moved.artifact.name + ETRECORD_SUFFIX)
    marker = tmp_path / "ran"
    with zipfile.ZipFile(etrecord) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    victim = next(n for n in entries if n.endswith("_example_inputs"))
    buf = io.BytesIO()
    torch.save(Touch(marker), buf)
    entries[victim] = buf.getvalue()
    with zipfile.ZipFile(etrecord, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    manifest = {**moved.manifest, "side_files": {ETRECORD_SUFFIX: {"sha256": sha256_of(etrecord)}}}  # its new sha
    with pytest.raises(ArtifactError, match="holds objects other than tensors"):
        TARGET.capture(moved.artifact, manifest, example().numpy())
    assert not marker.exists()


@pytest.mark.heavy  # an int8 compile (a minute); the default run ranks one in tests/test_debug_quantized.py
def test_an_int8_program_without_delegate_gives_every_layer_its_dequantized_value(tmp_path):
    """`--quantize int8 --delegate none`: the same quantized program on the portable and quantized kernels. Every
    convolution's value is the dequantized one the next layer reads (not the int8 codes, not a weight's
    dequantization), near the float model's, and a (de)quantize op's time goes to the layer it quantizes for."""
    model = randomize(edgekit.create_model("mobilenetv2_100", num_classes=10))
    result = edgekit.compile(
        model, "executorch", out=tmp_path, input_size=SIZE, delegate="none", quantize="int8", calib="digits",
        calib_size=32, verify=False,
    )  # fmt: skip
    assert result.artifact.name == "MobileNetV2.none.pte"  # a module in hand: named after its class
    x = example()
    got = TARGET.capture(result.artifact, result.manifest, x.numpy())
    assert got is not None
    net = reference(model)
    ref = module_outputs(net, x)
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(convs) <= set(got), sorted(set(convs) - set(got))
    acts = [n for n, m in net.named_modules() if isinstance(m, nn.ReLU6)]  # (a conv's value has its BN folded in)
    for name in acts[:6]:  # early layers: int8 rounding only, nothing accumulated yet
        a, b = ref[name].ravel(), got[name].ravel()
        assert got[name].dtype == np.float32 and got[name].shape == tuple(ref[name].shape)
        assert float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99, name
        assert len(np.unique(got[name])) > 10  # a dequantized activation, not a handful of codes
    rows = TARGET.op_profile(result.artifact, x.numpy(), 1)
    assert rows is not None
    qdq = [r for r in rows if "quantize_per_" in r["op"]]
    share = sum(r["ms"] for r in qdq if r["module"]) / sum(r["ms"] for r in qdq)
    assert share > 0.95  # credited to layers, not to the model's own forward (the input's quantize alone is)


class Flat(nn.Module):
    """Ends in its own forward (a flatten after the head), as MobileViG does: a whole-model delegate's one output is
    no submodule's."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3), keepdim=True)).flatten(1)


def test_debug_of_a_network_one_delegate_hides_says_to_compile_without_it(tmp_path):
    from edgekit.compile import DebugError, debug

    net = randomize(Flat()).eval()
    hidden = edgekit.compile(net, "executorch", out=tmp_path / "x", input_size=16, name="flat", verify=False)
    with pytest.raises(DebugError, match="compile the same model with --delegate none"):
        debug(hidden.artifact, net)
    seen = edgekit.compile(net, "executorch", out=tmp_path / "n", input_size=16, name="flat", delegate="none")
    r = debug(seen.artifact, net)
    assert {"stem.0", "stem", "head"} <= {row["module"] for row in r["rows"]} and r["first_breach"] is None
