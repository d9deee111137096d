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
from edgekit.prune.magnitude import group_scores, magnitude_structured
from edgekit.prune.plan import round_keep

from .conftest import assert_user_error, randomize, run_cli
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


@pytest.mark.parametrize("name", ["hier_vit", "swin"])
def test_heads_of_timm_attention_are_groups(name):
    # timm's forms hold the attention width (`self.attn_dim`) or read it back (`reshape(B_, N, -1)`): heads can go
    model = PATTERNS[name]().eval()
    groups = channel_groups(model, SIZE)
    attns = {n: m for n, m in model.named_modules() if n.endswith(".attn")}
    for path, attn in attns.items():
        (g,) = [g for g in groups if any(e.fqn == f"{path}.qkv.weight" for e in g.entries)]
        assert g.size == attn.num_heads  # one unit per head: q, k and v rows of its width together
        qkv = next(e for e in g.entries if e.fqn == f"{path}.qkv.weight")
        assert qkv.per == 3 * attn.qkv.out_features // 3 // attn.num_heads


def test_heads_tied_to_the_input_width_are_left_out_with_the_module_named(tmp_path):
    # `reshape(B, N, C)` with C read from the block's input: the rebuilt network cannot lose a head; the prune
    # still runs (MLP widths go) and names each attention it left alone
    proc = run_cli(
        "prune", f"{PATTERNS_FILE}:HierViTInputWidth", "--method", "magnitude", "--ratio", "0.5", "--structured",
        "--input-size", str(SIZE), "--out", str(tmp_path / "p.pt"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = __import__("json").loads(proc.stdout)
    assert report["channels_removed"] > 0
    assert len(report["left_out"]) == 4
    assert "(in module 'stages.0.0.attn')" in report["left_out"][0]
    assert report["left_out"][0].startswith("stages.0.0.attn.qkv (2 units): shape")
    proc = run_cli(
        "prune", f"{PATTERNS_FILE}:HierViTInputWidth", "--method", "magnitude", "--ratio", "0.5", "--structured",
        "--input-size", str(SIZE), "--out", str(tmp_path / "q.pt"),
    )  # fmt: skip
    assert "left out    stages.2.0.attn.qkv (8 units)" in proc.stdout


def test_kept_channel_counts_round_to_the_runtime_tile():
    model = randomize(PATTERNS["resnet_basic"]().eval())
    groups = channel_groups(model, SIZE)
    scores = {g.id: group_scores(model, g) for g in groups}
    keep = magnitude_structured(model, groups, 0.5, scores=scores)
    assert any(len(k) % 8 for k in keep.values())  # a global ranking keeps any count
    nearest, up = round_keep(groups, keep, scores, 8), round_keep(groups, keep, scores, 8, up=True)
    for g in groups:
        assert len(nearest[g.id]) % 8 == 0 or g.size < 8
        assert abs(len(nearest[g.id]) - len(keep[g.id])) <= 4
        # up (a trained method): everything it kept stays, the best of the rest fill the tile
        assert set(keep[g.id]) <= set(up[g.id]) and len(up[g.id]) - len(keep[g.id]) < 8
        added = [i for i in up[g.id] if i not in keep[g.id]]
        dropped = [i for i in range(g.size) if i not in up[g.id]]
        assert not added or not dropped or scores[g.id][added].min() >= scores[g.id][dropped].max()
    assert round_keep(groups, keep, scores, 1) == keep


def test_round_to_out_of_range_is_one_line(tmp_path):
    proc = run_cli(
        "prune", _ref("resnet_basic"), "--method", "magnitude", "--ratio", "0.5", "--structured", "--round-to", "0",
        "--input-size", str(SIZE), "--out", str(tmp_path / "p.pt"),
    )  # fmt: skip
    assert_user_error(proc, "--round-to 0 is out of range")
    assert not (tmp_path / "p.pt").exists()


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
