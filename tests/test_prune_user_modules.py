"""Pruning users' own modules: computed sizes and cached tensors after surgery, module versions through
checkpoints, and DIMAP's coverage of every conv and linear weight (with the report saying what it counted)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import edgekit
from edgekit.models import load_model, save_checkpoint, trusted_code
from edgekit.models.weights import extract_state_dict, read_checkpoint
from edgekit.prune import apply_plan
from edgekit.prune.dimap import dimap_unstructured, modules_of
from edgekit.prune.magnitude import prunable_weights

from .patterns import INPUT_SIZE, PATTERNS, _LeViTBiasCache

PATTERNS_FILE = Path(__file__).parent / "patterns.py"


def _plan(size: int, keep: list[int], entries: list[tuple[str, int]]) -> dict:
    """A one-group plan (the plain data `make_plan` writes): `entries` are (tensor, dim) sliced at offset 0."""
    return {"groups": [{"size": size, "keep": keep, "entries": [[f, d, 0, "out"] for f, d in entries]}]}


def _conv_bn_entries(prefix: str) -> list[tuple[str, int]]:
    return [(f"{prefix}.conv.weight", 0)] + [
        (f"{prefix}.bn.{n}", 0) for n in ("weight", "bias", "running_mean", "running_var")
    ]


# --- 1. surgery on user blocks ----------------------------------------------------------------------------------


class ConvNormAct(nn.Module):
    """MobileNetV4 (timm) style: the sizes are read-only properties computed from the conv."""

    def __init__(self, cin: int, cout: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x):
        return self.bn(self.conv(x))


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c, 4, 1)
        self.expand = nn.Conv2d(4, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class CopyingBlock(nn.Module):
    """MobileOne style: plain copies of the sizes (read by a reparameterization), an SE registered first."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = cin, cout, 1
        self.se = SE(cout)
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.se(self.bn(self.conv(x)))


def test_surgery_sets_plain_size_copies_and_leaves_computed_ones_alone():
    net = nn.Sequential(ConvNormAct(3, 8), CopyingBlock(8, 6), ConvNormAct(6, 4)).eval()
    keep = [0, 2, 5]
    entries = _conv_bn_entries("0") + [("1.conv.weight", 1)]
    apply_plan(net, _plan(8, keep, entries))  # was AttributeError: property 'in_channels' ... has no setter
    assert net[0].in_channels == 3 and net[0].out_channels == 3
    assert (net[1].in_channels, net[1].out_channels, net[1].groups) == (3, 6, 1)  # from its conv, not the SE's
    net(torch.randn(1, 3, 8, 8))


class BiasCache(_LeViTBiasCache):
    """LeViT's attention: `train(False)` caches `ab = attention_biases[:, idxs]` and eval mode reads the cache."""

    def __init__(self, heads: int = 4) -> None:
        super().__init__()
        self.attention_biases = nn.Parameter(torch.randn(heads, 5))
        self.register_buffer("attention_bias_idxs", torch.randint(0, 5, (3, 3)))
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x):  # x (B, heads, 3, 3)
        return x + self._biases()


def test_surgery_rebuilds_what_a_train_override_caches_and_keeps_every_mode():
    net = nn.Sequential(BiasCache(4)).eval()
    net[0].norm.train()  # a user's mixed modes survive
    apply_plan(net, _plan(4, [1, 3], [("0.attention_biases", 0)]))
    assert net[0].ab.shape == (2, 3, 3) and not net[0].training and net[0].norm.training
    torch.testing.assert_close(net(torch.zeros(1, 2, 3, 3))[0], net[0].attention_biases[:, net[0].attention_bias_idxs])


# --- 2. module versions through a checkpoint ----------------------------------------------------------------------

NET_PY = '''
import torch
from torch import nn


class Versioned(nn.Module):
    """torchvision MNASNet's pattern: the loader reads the module's version from the state dict's metadata."""

    _version = 2

    def __init__(self, c):
        super().__init__()
        self.expand = nn.Conv2d(c, 4 * c, 1, bias=False)
        self.bn = nn.BatchNorm2d(4 * c)
        self.project = nn.Conv2d(4 * c, c, 1, bias=False)

    def forward(self, x):
        return x + self.project(torch.relu(self.bn(self.expand(x))))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        version = local_metadata.get("version", None)
        if version not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {version}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.layers = nn.Sequential(Versioned(8), Versioned(8))
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.classifier(self.layers(self.stem(x)).mean((2, 3)))
'''


@pytest.fixture
def net_ref(tmp_path) -> str:
    (tmp_path / "net.py").write_text(textwrap.dedent(NET_PY))
    return f"{tmp_path / 'net.py'}:Net"


def test_checkpoint_keeps_module_versions(net_ref, tmp_path):
    with trusted_code([net_ref]):
        loaded = load_model(net_ref)
        with torch.no_grad():
            for p in loaded.model.parameters():
                p.normal_()
        path = save_checkpoint(loaded, tmp_path / "net.pt")
        blob = torch.load(path, weights_only=True)
        assert blob["state_dict_metadata"]["layers.0"] == {"version": 2}
        assert blob["state_dict_metadata"]["layers.0.bn"] == {"version": 2}
        # what the loader passed before: the tensors without their metadata, which the module refuses
        bare = dict(extract_state_dict(read_checkpoint(path), path))
        with pytest.raises(ValueError, match="version should be set to 1 or 2 instead of None"):
            load_model(net_ref).model.load_state_dict(bare)
        back = load_model(str(path))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.model(x), loaded.model(x))


def test_checkpoint_written_before_keeps_module_versions(net_ref, tmp_path):
    """A checkpoint without `state_dict_metadata` (written before it existed) still has the pickled metadata."""
    with trusted_code([net_ref]):
        path = save_checkpoint(load_model(net_ref), tmp_path / "net.pt")
        blob = torch.load(path, weights_only=True)
        del blob["state_dict_metadata"]
        torch.save(blob, path)
        load_model(str(path))


def test_dimap_prunes_a_user_module_and_its_checkpoint_loads(net_ref, tmp_path):
    with trusted_code([net_ref]):
        result = edgekit.prune(net_ref, "dimap", 0.5, out=tmp_path / "pruned.pt", input_size=32)
        back = load_model(str(result.checkpoint))
    r = result.report
    assert abs(r["prunable_sparsity"] - 0.5) < 0.01, r
    weights = {n: p for n, p in back.model.named_parameters() if n.endswith("weight") and p.dim() >= 2}
    zeros = sum(int((p == 0).sum()) for p in weights.values()) / sum(p.numel() for p in weights.values())
    assert r["sparsity_all_weights"] == pytest.approx(zeros)
    assert r["excluded_weights"] == ["stem.weight", "classifier.weight"]
    assert torch.count_nonzero(back.model.stem.weight) == back.model.stem.weight.numel()


# --- 3. DIMAP covers every conv and linear weight ---------------------------------------------------------------


def _zero_fraction(tensors) -> float:
    tensors = list(tensors)
    return sum(int((t == 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)


@pytest.mark.parametrize("name", ["levit", "regnet_y", "hier_vit", "mobilenet_v3"])
def test_dimap_zeroes_the_asked_fraction_of_every_prunable_weight(name):
    torch.manual_seed(0)
    net = PATTERNS[name]().eval()
    prunable = prunable_weights(net)
    modules = modules_of(net, auxiliary=True)
    assert sorted(w for ws in modules.values() for w in ws) == sorted(prunable)  # each weight in one module
    report = dimap_unstructured(net, 0.5)
    assert abs(_zero_fraction(prunable.values()) - 0.5) < 0.01, report
    assert all(abs(s - 0.5) < 0.02 for s in report.values()), report


def test_dimap_modules_split_attention_into_qkv_and_projection():
    mods = modules_of(PATTERNS["hier_vit"]())
    assert mods["stages.0.0.attn.qkv"] == ["stages.0.0.attn.qkv.weight"]
    assert mods["stages.0.0.attn.proj"] == ["stages.0.0.attn.proj.weight"]
    assert mods["stages.0.0.mlp"] == ["stages.0.0.mlp.fc1.weight", "stages.0.0.mlp.fc2.weight"]
    levit = modules_of(PATTERNS["levit"]())
    assert levit["blocks.0.m.qkv"] == ["blocks.0.m.qkv.c.weight"]
    assert levit["blocks.2.kv+q"] == ["blocks.2.kv.c.weight", "blocks.2.q.1.c.weight"]
    assert levit["blocks.1.m"] == ["blocks.1.m.0.c.weight", "blocks.1.m.2.c.weight"]  # LeViT's MLP
    regnet = modules_of(PATTERNS["regnet_y"]())  # a block holding an SE is a block, not a stage
    block = "trunk_output.block1.block1-0.f"
    assert regnet[block] == [f"{block}.{n}.0.weight" for n in ("a", "b", "c")]
    assert regnet[f"{block}.se"] == [f"{block}.se.fc1.weight", f"{block}.se.fc2.weight"]


@pytest.mark.parametrize("name", ["levit", "regnet_y", "hier_vit", "mobilenet_v3"])
def test_prune_report_counts_all_weights_and_names_what_it_kept(name, tmp_path):
    cls = type(PATTERNS[name]()).__name__
    ref = f"{PATTERNS_FILE}:{cls}"
    with trusted_code([ref]):
        r = edgekit.prune(ref, "dimap", 0.5, out=tmp_path / f"{name}.pt", input_size=INPUT_SIZE[name] or 64).report
        back = load_model(str(tmp_path / f"{name}.pt")).model
    assert abs(r["prunable_sparsity"] - 0.5) < 0.01, r
    every = [p for n, p in back.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    assert r["sparsity_all_weights"] == pytest.approx(_zero_fraction(every))
    assert 0.0 < r["sparsity_all_weights"] <= r["prunable_sparsity"]
    assert r["excluded_weights"] and "first convolution" in r["excluded_rule"]
    kept = dict(back.named_parameters())
    assert all(torch.count_nonzero(kept[n]) == kept[n].numel() for n in r["excluded_weights"])


def test_dimap_covers_levit_written_with_timm_names():
    """timm's LeViT names the layer in its ConvNorm / LinearNorm wrappers `linear` (the patterns' copy says `c`)."""
    torch.manual_seed(0)
    net = PATTERNS["levit"]().eval()
    for m in list(net.modules()):
        if type(m).__name__ in ("ConvNorm", "LinearNorm"):
            m._modules = {"linear" if k == "c" else k: v for k, v in m._modules.items()}
    dimap_unstructured(net, 0.5)
    every = [p for n, p in net.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    assert _zero_fraction(every) > 0.45
