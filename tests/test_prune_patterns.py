"""Structured pruning on the networks users bring: the patterns of the 2023-2026 mobile families (`patterns.py`).

In-place residual adds, SE gates, channel shuffles, ghost modules' concatenate-and-slice, grouped convolutions,
tokens, multi-head attention with one qkv projection or three, windows, attention biases, linear attention, star
products, multi-query attention. For each network: every group the analysis offers is exactly removable (zeroing
it = removing it), all three methods prune it, and the pruned network compiles and verifies.
"""

from __future__ import annotations

import copy

import pytest
import torch

import edgekit
from edgekit.prune import apply_plan, channel_groups, make_plan, zero_channels

from .conftest import randomize, run_cli
from .patterns import INPUT_SIZE, PATTERNS

PATTERNS_FILE = __import__("pathlib").Path(__file__).with_name("patterns.py")
SIZE = 64  # every pattern network runs at 64 (LeViT only there: its attention biases are sized for it)


def _size(name: str) -> int:
    return INPUT_SIZE.get(name) or SIZE


def _ref(name: str) -> str:
    return f"{PATTERNS_FILE}:{PATTERNS[name].__name__}"


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_group_of_every_pattern_is_exactly_removable(name):
    model = randomize(PATTERNS[name]().eval())
    size = _size(name)
    groups = channel_groups(model, size)
    assert groups, name
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    picks = {g.id: torch.randperm(g.size, generator=gen)[: max(1, g.size // 2)].tolist() for g in groups if g.size > 1}
    cases = [[g] for g in groups if g.id in picks] + [[g for g in groups if g.id in picks]]
    for case in cases:  # each group alone, then all at once
        zeroed, pruned = copy.deepcopy(model), copy.deepcopy(model)
        for g in case:
            zero_channels(zeroed, g, picks[g.id])
        apply_plan(pruned, make_plan(groups, {g.id: [i for i in range(g.size) if i not in picks[g.id]] for g in case}))
        with torch.no_grad():
            a, b = zeroed(x), pruned(x)
        assert (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item()), (name, [g.id for g in case])
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_attention_heads_go_whole_with_their_biases():
    # LeViT: q, k and v of a head, its attention-bias column and the projection's columns are one unit
    model = PATTERNS["levit"]().eval()
    groups = channel_groups(model, _size("levit"))
    heads = [g for g in groups if any(e.fqn.endswith("attention_biases") for e in g.entries)]
    assert heads
    for g in heads:
        biases = next(e for e in g.entries if e.fqn.endswith("attention_biases"))
        assert biases.dim == 0 and biases.per == 1  # one row of the (heads, offsets) table per head
        assert g.sizes  # the module's head count changes with it


def test_a_channel_shuffle_loses_the_same_channels_in_every_group():
    model = randomize(PATTERNS["shufflenet_v2"]().eval())
    groups = channel_groups(model, SIZE)
    pruned = apply_plan(copy.deepcopy(model), make_plan(groups, {g.id: list(range(g.size // 2)) for g in groups}))
    with torch.no_grad():
        assert pruned(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 10)


@pytest.mark.parametrize("name", ["resnet_basic", "shufflenet_v2", "regnet_y", "mobilevit", "levit", "starnet"])
def test_structured_half_prunes_and_compiles_for_onnx(name, tmp_path):
    size = _size(name)
    out = tmp_path / "p.pt"
    proc = run_cli(
        "prune", _ref(name), "--method", "magnitude", "--ratio", "0.5", "--structured",
        "--input-size", str(size), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("compile", str(out), "--target", "onnx", "--out", str(tmp_path / "c"), "--trust-code")
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout


@pytest.mark.heavy
@pytest.mark.parametrize("target", ["onnx", "tflite", "executorch", "coreml"])  # Core ML: conversion (Linux)
@pytest.mark.parametrize("method", ["magnitude", "dimap", "oto"])
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_pattern_prunes_with_every_method_and_compiles(name, method, target, tmp_path):
    size = _size(name)
    out = tmp_path / "p.pt"
    extra = ["--structured"] if method == "magnitude" else ["--steps", "20"] if method == "oto" else []
    proc = run_cli(
        "prune", _ref(name), "--method", method, "--ratio", "0.5", *extra, "--input-size", str(size),
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with edgekit.models.trusted_code():
        assert edgekit.load_model(str(out)).model(torch.randn(1, 3, size, size)).shape == (1, 10)
    proc = run_cli("compile", str(out), "--target", target, "--out", str(tmp_path / "c"), "--trust-code")
    assert proc.returncode == 0, proc.stderr


def test_a_full_range_slice_converts_for_coreml(tmp_path):
    # GhostNet's `cat([x1, x2])[:, :oup]` takes every channel: torch.export writes `aten.alias`, which coremltools
    # cannot lower; edgekit drops the alias (its input) before converting
    proc = run_cli("compile", _ref("ghostnet"), "--target", "coreml", "--input-size", "32", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "GhostNetLike.mlpackage").is_dir()
