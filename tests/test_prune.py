"""Channel groups, the zero-invariance of every group, structured and unstructured pruning, `edgekit prune`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import edgekit
from edgekit.errors import EdgekitError
from edgekit.models import load_model
from edgekit.prune import (
    PruneGraphError,
    PruningMethod,
    apply_plan,
    channel_groups,
    make_plan,
    method_names,
    register_method,
    unregister_method,
    zero_channels,
)
from edgekit.prune.dimap import dimap_unstructured, layer_scores, modules_of

from .conftest import assert_user_error, randomize, run_cli
from .test_zoo import ZOO

SIZE = 96  # MobileViG's graph blocks roll at 96 (3x3 at the last stage); GreedyViG's masks work at 96 too


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(1.0, a.abs().max().item())  # MobileOne's random-init logits reach 1e5: compare relatively
    assert (a - b).abs().max().item() <= 1e-5 * scale, ((a - b).abs().max().item(), scale)


def check_invariance(model: nn.Module, size: int, per_group: bool, seed: int = 0, max_groups: int = 0) -> int:
    """Zeroing channels of groups in the full model == removing them (the subnet), for every group
    (or, one group at a time, a seeded sample of `max_groups` of them)."""
    groups = channel_groups(model, size)
    assert groups
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, size, size, generator=gen)
    picks = {g.id: torch.randperm(g.size, generator=gen)[: max(1, g.size // 8)].tolist() for g in groups}
    cases = [[g] for g in groups] if per_group else [groups]
    if max_groups and len(cases) > max_groups:
        cases = [cases[i] for i in sorted(torch.randperm(len(cases), generator=gen)[:max_groups].tolist())]
    for case in cases:
        zeroed, pruned = copy.deepcopy(model), copy.deepcopy(model)
        for g in case:
            zero_channels(zeroed, g, picks[g.id])
        apply_plan(pruned, make_plan(groups, {g.id: [i for i in range(g.size) if i not in picks[g.id]] for g in case}))
        with torch.no_grad():
            assert_same(zeroed(x), pruned(x))
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    return len(groups)


@pytest.mark.parametrize("name", ZOO)
def test_zero_invariance_of_all_groups_at_once(name):
    check_invariance(randomize(edgekit.create_model(name, num_classes=10)), SIZE, per_group=False)


@pytest.mark.parametrize(
    "name,size",
    # the smallest sizes at which each family's every op still acts (rolls, masks at every stage)
    [("mobilevig_ti", 96), ("greedyvig_s", 64), ("mobileone_s0", 32), ("mobilenetv2_100", 32)],
)
def test_zero_invariance_group_by_group(name, size):
    # all groups at once are checked for every zoo model above; here one group at a time (up to 8)
    n = check_invariance(randomize(edgekit.create_model(name, num_classes=10)), size, per_group=True, max_groups=8)
    assert n >= 4


def test_mobilevig_grapher_groups_reach_through_the_concatenation():
    groups = channel_groups(edgekit.create_model("mobilevig_ti"), SIZE)
    # the graph width (256) is one residual stream: fc1/fc2 of every Grapher and FFN, and both halves of
    # graph_conv.nn.0's input (cat([x, x_j])) belong to the groups that prune it
    gc_in = [e for g in groups for e in g.entries if e.fqn == "backbone.0.0.graph_conv.nn.0.weight" and e.role == "in"]
    # one unit per channel j takes both input columns j and 256 + j (x and x_j of the concatenation)
    assert len(gc_in) == 1 and gc_in[0].per == 2
    pairs = [gc_in[0].index[u * 2 : u * 2 + 2] for u in range(len(gc_in[0].index) // 2)]
    assert all(b - a == 256 for a, b in pairs) and sorted(a for a, _ in pairs) == list(range(256))
    assert (
        len(
            {
                g.id
                for g in groups
                for e in g.entries
                if e.fqn == "backbone.0.0.graph_conv.nn.0.weight" and e.role == "in"
            }
        )
        == 1
    )


class ResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16)
        )
        self.down = nn.Sequential(
            nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32)
        )
        self.proj = nn.Sequential(nn.Conv2d(16, 32, 1, 2), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = torch.relu(self.proj(x) + self.down(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 24, 3, 2, 1)
        self.dw = nn.Conv2d(24, 24, 3, 1, 1, groups=24)
        self.se1, self.se2 = nn.Conv2d(24, 8, 1), nn.Conv2d(8, 24, 1)
        self.pw = nn.Conv2d(24, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = nn.functional.hardswish(self.conv(x))
        x = self.dw(x)
        s = torch.sigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        x = self.pw(x * s)
        return self.fc(x.mean((2, 3)))


class Inceptionish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.b1 = nn.Conv2d(8, 6, 1)
        self.b2 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 10, 3, padding=1))
        self.mix = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(torch.cat([self.b1(x), self.b2(x)], dim=1))
        return self.fc(self.mix(x).mean((2, 3)))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, 2, C // 2).permute(2, 0, 3, 1, 4)
        x = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        x = self.proj(x.transpose(1, 2).reshape(B, N, C))
        return self.fc(x.mean(1))


@pytest.mark.parametrize("net", [ResNetish, SENet, Inceptionish])
def test_zero_invariance_on_networks_written_like_users_write_them(net):
    torch.manual_seed(0)
    model = randomize(net())
    check_invariance(model, 32, per_group=True)
    check_invariance(model, 32, per_group=False)


def test_concatenated_branches_prune_by_segment():
    groups = channel_groups(Inceptionish(), 32)
    mix_in = sorted((e.index, g.size) for g in groups for e in g.entries if e.fqn == "mix.weight" and e.role == "in")
    assert mix_in == [(list(range(6)), 6), (list(range(6, 16)), 10)]


class CumulativeMixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.conv(torch.cumsum(x, 1))  # mixes channels in an order: no rule follows it


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.blocks = nn.Sequential(nn.Identity(), CumulativeMixer())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_network_the_analysis_cannot_handle_fails_naming_the_op_and_module():
    with pytest.raises(PruneGraphError, match=r"cannot handle operator aten\.cumsum\S* in module 'blocks\.1'"):
        channel_groups(Unsupported(), 16)


def test_attention_that_reads_sizes_from_its_input_keeps_what_it_cannot_lose():
    # timm's pattern: `reshape(B, N, C)` with C from the block's input, `C // heads`: removing a head, or a
    # channel of the embedding, breaks the rebuilt forward; those groups are not offered, the others prune exactly
    model = randomize(Attention())
    groups = channel_groups(model, 32)
    outs = {e.fqn for g in groups for e in g.entries if e.role == "out"}
    assert "embed.weight" not in outs and "qkv.weight" not in outs and "proj.weight" in outs
    check_invariance(model, 32, per_group=True)


def test_dimap_metric_and_modules():
    w = torch.tensor([3.0, -4.0, 1.0, 0.0])
    # sorted by magnitude: 4, 3, 1, 0 -> cumulative squares 16, 25, 26, 26
    torch.testing.assert_close(layer_scores(w), torch.tensor([9 / 25, 1.0, 1 / 26, 0.0]))
    mods = modules_of(edgekit.create_model("mobilevig_ti"))
    assert mods["local_backbone.0.mlp"] == [f"local_backbone.0.mlp.{n}.weight" for n in ("fc1", "mid", "fc2")]
    assert mods["backbone.0.0"] == [
        "backbone.0.0.fc1.0.weight",
        "backbone.0.0.graph_conv.nn.0.weight",
        "backbone.0.0.fc2.0.weight",
    ]
    flat = [w for ws in mods.values() for w in ws]
    assert not any(n.startswith(("stem", "prediction", "head", "dist_head")) or ".conv." in n for n in flat)


def test_dimap_unstructured_hits_the_ratio_per_module_and_keeps_auxiliary_layers():
    model = edgekit.create_model("mobilevig_ti")
    stem = model.stem.stem[0].weight.clone()
    report = dimap_unstructured(model, 0.5)
    assert all(abs(s - 0.5) < 0.01 for s in report.values()), report
    assert torch.equal(model.stem.stem[0].weight, stem)


def test_prune_cli_structured_writes_a_checkpoint_that_compiles(tmp_path):
    ckpt = tmp_path / "ti50.pt"
    proc = run_cli(
        "prune",
        "mobilevig_ti",
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
        "--structured",
        "--input-size",
        str(SIZE),
        "--out",
        str(ckpt),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["after"]["params"] < 0.5 * r["before"]["params"] and r["after"]["macs"] < 0.5 * r["before"]["macs"]
    blob = torch.load(ckpt, weights_only=True)
    assert blob["base"] == "mobilevig_ti" and len(blob["plans"]) == 1
    loaded = load_model(str(ckpt))
    assert sum(p.numel() for p in loaded.model.parameters()) == r["after"]["params"]
    result = edgekit.compile(str(ckpt), "onnx", out=tmp_path)
    assert result.verification["status"] == "passed" and result.manifest["model"]["reference"] == str(ckpt)
    text = run_cli(
        "prune", str(ckpt), "--method", "dimap", "--ratio", "0.3", "--out", str(tmp_path / "again.pt")
    ).stdout
    assert "sparsity" in text  # a pruned checkpoint prunes again


def test_prune_unstructured_magnitude_is_global_with_a_floor(tmp_path):
    result = edgekit.prune("mobilenetv2_100", "magnitude", 0.6, out=tmp_path / "u.pt")
    assert abs(result.report["prunable_sparsity"] - 0.6) < 0.01
    assert max(result.report["sparsity_per_layer"].values()) <= 0.95 + 1e-6


def test_prune_bad_input(tmp_path):
    out = tmp_path / "x.pt"
    assert_user_error(
        run_cli("prune", "mobilevig_ti", "--method", "magnitud", "--ratio", "0.5", "--out", str(out)),
        "unknown pruning method 'magnitud'",
    )
    assert_user_error(
        run_cli("prune", "mobilevig_ti", "--method", "dimap", "--ratio", "1.5", "--out", str(out)),
        "--ratio 1.5 is out of range",
    )
    assert not out.exists()


def test_unknown_method_is_a_one_line_error_naming_the_registered_ones(tmp_path):
    out = tmp_path / "x.pt"
    with pytest.raises(EdgekitError) as e:
        edgekit.prune("mobilevig_ti", "magnitud", 0.5, out=out)
    assert str(e.value) == "unknown pruning method 'magnitud'; choose one of: oto, magnitude, dimap"
    with pytest.raises(EdgekitError, match=r"^unknown OTO optimizer 'adam'; choose hesso or dhspg$"):
        edgekit.prune("mobilevig_ti", "oto", 0.5, optimizer="adam", out=out)  # the method checks its own options
    assert not out.exists()


class KeepFirst(PruningMethod):
    """A pruning method written outside edgekit: scores fall with the channel index, so every group keeps
    its first channels."""

    name = "keep-first"

    def group_scores(self, net, groups):
        return {g.id: torch.arange(g.size, 0, -1, dtype=torch.float32) for g in groups}


@pytest.fixture
def keep_first():
    method = register_method(KeepFirst())
    yield method
    unregister_method(method.name)
    assert method.name not in method_names()


def test_a_registered_method_prunes_through_edgekit_prune(keep_first, user_model_file, tmp_path):
    ref = f"{user_model_file}:TinyNet"
    assert method_names()[-1] == "keep-first"
    with pytest.raises(ValueError, match="already registered"):
        register_method(KeepFirst())
    result = edgekit.prune(ref, "keep-first", 0.5, structured=True, out=tmp_path / "k.pt", input_size=32)
    r = result.report
    assert r["method"] == "keep-first" and 0 < r["channels_removed"] < r["channels_total"]
    blob = torch.load(result.checkpoint, weights_only=True)
    assert blob["provenance"]["method"] == "keep-first"
    kept = [g["keep"] for g in blob["plans"][0]["groups"]]
    assert kept and all(k == list(range(len(k))) for k in kept)  # the first channels of every group
    pruned = load_model(str(result.checkpoint)).model
    first, last = pruned.features[0], pruned.features[6]
    assert first.out_channels < 16 and last.out_channels < 32 and pruned.fc.in_features == last.out_channels
    assert sum(p.numel() for p in pruned.parameters()) == r["after"]["params"] < r["before"]["params"]
    with torch.no_grad():
        assert pruned(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(EdgekitError, match="'keep-first' removes whole channel groups only; pass --structured"):
        edgekit.prune(ref, "keep-first", 0.5, out=tmp_path / "u.pt", input_size=32)


@pytest.mark.parametrize("optimizer", ["hesso", "dhspg"])
def test_oto_drives_groups_to_exact_zero_and_the_subnet_equals_the_sparse_model(optimizer):
    from edgekit.data import load_dataset
    from edgekit.prune.oto import OTOConfig, oto_train

    torch.manual_seed(0)
    model = ResNetish()  # the optimizers do not depend on the architecture: a small one keeps this fast
    groups = channel_groups(model, 32)
    data = load_dataset("digits", 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    result = oto_train(model, groups, 0.4, data, OTOConfig(optimizer=optimizer, steps=60, batch_size=32))
    keep, log = result["keep"], result["log"]
    dropped = sum(g.size - len(keep[g.id]) for g in groups)
    assert dropped == log["target"] == int(0.4 * sum(g.size for g in groups)) > 0
    # the dropped channels are exactly zero in the full model ...
    for g in groups:
        gone = [c for c in range(g.size) if c not in keep[g.id]]
        for e in g.entries:
            if e.role != "in" and "running" not in e.fqn and gone:
                t = model.get_parameter(e.fqn) if e.fqn in dict(model.named_parameters()) else model.get_buffer(e.fqn)
                assert t.detach().movedim(e.dim, 0)[e.positions(gone)].abs().max() == 0
    # ... so the compact subnet, built with no fine-tuning, computes the same
    sub = apply_plan(copy.deepcopy(model), make_plan(groups, keep))
    x = data.val.x[:16]
    with torch.no_grad():
        assert_same(model(x), sub(x))
    assert log["loss_last"] < log["loss_first"]


def test_prune_cli_oto(tmp_path):
    ckpt = tmp_path / "oto.pt"
    proc = run_cli(
        "prune",
        "mobileone_s0",
        "--method",
        "oto",
        "--ratio",
        "0.3",
        "--steps",
        "20",
        "--num-classes",
        "10",
        "--input-size",
        "32",
        "--out",
        str(ckpt),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["oto"]["val_accuracy_subnet"] == r["oto"]["val_accuracy_group_sparse"]
    assert r["after"]["macs"] < r["before"]["macs"]
    assert edgekit.compile(str(ckpt), "onnx", out=tmp_path).verification["status"] == "passed"
    assert_user_error(
        run_cli("prune", "mobileone_s0", "--method", "oto", "--ratio", "0.3", "--out", str(tmp_path / "x.pt")),
        "pass --num-classes 10",
    )
    assert_user_error(
        run_cli(
            "prune",
            "mobileone_s0",
            "--method",
            "oto",
            "--ratio",
            "0.3",
            "--num-classes",
            "10",
            "--data",
            "cifar",
            "--out",
            str(tmp_path / "x.pt"),
        ),
        "unknown dataset 'cifar'",
    )


# By default every method on MobileViG-Ti (OTO on MobileOne-S0 is compiled in test_prune_cli_oto, and every
# family's channel groups are checked for zero invariance above); the other families' cases are heavy, with
# the whole zoo x method matrix below.
DEFAULT_CASES = [
    ("mobilevig_ti", "oto"),
    ("mobilevig_ti", "magnitude"),
    ("mobilevig_ti", "dimap"),
    pytest.param("mobileone_s0", "oto", marks=pytest.mark.heavy),
    pytest.param("mobilenetv2_100", "magnitude", marks=pytest.mark.heavy),
    pytest.param("greedyvig_s", "magnitude", marks=pytest.mark.heavy),
]


def _pruned_checkpoint(name: str, method: str, path, size: int = 32):
    kwargs = (
        dict(steps=10, num_classes=10) if method == "oto" else dict(structured=method == "magnitude", num_classes=10)
    )
    return edgekit.prune(name, method, 0.5, out=path, input_size=size, **kwargs)


@pytest.mark.parametrize("name,method", DEFAULT_CASES)
def test_pruned_models_compile_for_every_target_and_verify(name, method, tmp_path):
    """magnitude structured, dimap unstructured (its default), oto structured: at 0.5, then all four targets."""
    from edgekit.compile import target_names

    ckpt = tmp_path / f"{name}_{method}.pt"
    _pruned_checkpoint(name, method, ckpt)
    for target in target_names():
        r = edgekit.compile(str(ckpt), target, out=tmp_path)
        assert r.verification["status"] in ("passed", "skipped"), r.verification
        if target != "coreml":
            assert r.verification["status"] == "passed"


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["oto", "magnitude", "dimap"])
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_pruned_by_every_method_compiles(name, method, tmp_path):
    test_pruned_models_compile_for_every_target_and_verify(name, method, tmp_path)
