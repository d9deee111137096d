"""The zoo: official names and shapes, semantics of the graph blocks, MobileOne reparameterization."""

from __future__ import annotations

import pytest
import torch

import edgekit
from edgekit.errors import UnknownModelError
from edgekit.models import count_macs, count_params, list_models, load_model, model_card, model_info
from edgekit.models.deploy import export_form
from edgekit.models.greedyvig import DynamicMRConv4d
from edgekit.models.layers import roll_h, roll_w
from edgekit.models.mobileone import reparameterize_model
from edgekit.models.mobilevig import MRConv4d

from .conftest import official_keys, randomize

ZOO = [
    "greedyvig_b",
    "greedyvig_m",
    "greedyvig_s",
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobileone_s0",
    "mobileone_s1",
    "mobileone_s2",
    "mobileone_s3",
    "mobileone_s4",
    "mobilevig_b",
    "mobilevig_m",
    "mobilevig_s",
    "mobilevig_ti",
]
OFFICIAL = [n for n in ZOO if n.startswith(("mobilevig", "greedyvig"))]


def test_zoo_lists_every_model():
    assert list_models() == ZOO


@pytest.mark.parametrize("name", ZOO)
def test_eval_gives_logits_for_any_classes_and_size(name):
    model = edgekit.create_model(name, num_classes=7)
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_names_and_shapes(name):
    ref = official_keys(name)
    sd = edgekit.create_model(name).state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == {k: list(v) for k, v in ref["keys"].items()}
    assert count_params(edgekit.create_model(name)) == ref["num_params"]


@pytest.mark.parametrize("name", OFFICIAL)
def test_vig_training_returns_both_heads_eval_their_mean(name):
    model = randomize(edgekit.create_model(name, num_classes=5))
    x = torch.randn(2, 3, 64, 64)
    model.train()
    for m in model.modules():  # keep BatchNorm in inference so the two passes are comparable
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        cls, dist = model(x)
        model.eval()
        mean = model(x)
    torch.testing.assert_close(mean, (cls + dist) / 2)


def _reference_mrconv(x: torch.Tensor, K: int) -> torch.Tensor:
    """SVGA as PAPERS.md states it: x_j from zero, running max of x - roll(x, i) for i = K, 2K, ... < H (and W)."""
    x_j = torch.zeros_like(x)
    for i in range(K, x.shape[2], K):
        x_j = torch.maximum(x_j, x - torch.roll(x, i, dims=2))
    for i in range(K, x.shape[3], K):
        x_j = torch.maximum(x_j, x - torch.roll(x, i, dims=3))
    return torch.cat([x, x_j], 1)


def _reference_dynamic(x: torch.Tensor, K: int) -> torch.Tensor:
    """GreedyViG's dynamic MRConv as PAPERS.md states it (shift 0 included)."""
    H, W = x.shape[2:]
    d = (x - torch.roll(x, (H // 2, W // 2), dims=(2, 3))).abs().sum(1, keepdim=True)
    thr = d.mean((2, 3), keepdim=True) - d.std((2, 3), keepdim=True)
    x_j = torch.zeros_like(x)
    for dim, n in ((2, H), (3, W)):
        for i in range(0, n, K):
            r = torch.roll(x, i, dims=dim)
            mask = (x - r).abs().sum(1, keepdim=True) < thr
            x_j = torch.maximum(x_j, (r - x) * mask)
    return torch.cat([x, x_j], 1)


def test_roll_matches_torch_roll():
    x = torch.randn(1, 2, 5, 7)
    for i in range(1, 5):
        torch.testing.assert_close(roll_h(x, i), torch.roll(x, i, dims=2))
    for i in range(1, 7):
        torch.testing.assert_close(roll_w(x, i), torch.roll(x, i, dims=3))


@pytest.mark.parametrize("K,size", [(2, 7), (2, 4), (1, 5), (4, 14)])
def test_graph_blocks_compute_what_the_papers_say(K, size):
    torch.manual_seed(0)
    x = torch.randn(2, 6, size, size)
    static = MRConv4d(6, 12, K).eval()
    static.nn = torch.nn.Identity()
    torch.testing.assert_close(static(x), _reference_mrconv(x, K))
    dynamic = DynamicMRConv4d(6, 6, K).eval()
    dynamic.nn = torch.nn.Identity()
    torch.testing.assert_close(dynamic(x), _reference_dynamic(x, K))


@pytest.mark.parametrize("name", ["mobileone_s0", "mobileone_s1", "mobileone_s2", "mobileone_s3", "mobileone_s4"])
def test_mobileone_reparameterizes_to_single_branch_with_equal_outputs(name):
    model = randomize(edgekit.create_model(name, num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        n_before = count_params(model)
        reparameterize_model(model)
        after = model(x)
    assert model.is_reparameterized
    assert count_params(model) < n_before
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max().item() <= 1e-4 * max(1.0, before.abs().max().item())


@pytest.mark.parametrize("name", ZOO)
def test_export_form_computes_the_same_and_leaves_the_model_alone(name):
    model = randomize(edgekit.create_model(name, num_classes=10))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = export_form(model)(x)
    assert (ref - out).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_counts_match_the_papers():
    # edgekit's counts beside the papers' (MobileNetV2 x1.4: the paper's table says 6.9 M; the
    # architecture it describes, as timm and TF-slim build it, has 6.1 M).
    for name in ZOO:
        info = model_info(name)
        paper = info["paper"]
        assert info["input_size"] == 224 and len(info["mean"]) == 3
        if name != "mobilenetv2_140":
            assert info["params_m"] == pytest.approx(paper["params_m"], rel=0.06), name
        assert info["gmacs"] == pytest.approx(paper["gmacs"], rel=0.07), name


def test_macs_scale_with_input_size():
    model = edgekit.create_model("mobilenetv2_100")
    classifier = 1280 * 1000  # the Linear head does not grow with the image
    assert count_macs(model, 128) - classifier == pytest.approx(4 * (count_macs(model, 64) - classifier), rel=1e-6)


def test_model_card_carries_preprocessing_and_paper_numbers():
    card = model_card("mobilevig_ti")
    assert card.paper.top1 == 75.7 and card.paper.latency_ms == 0.78
    assert card.mean == (0.485, 0.456, 0.406)


def test_unknown_model_suggests_nearest():
    with pytest.raises(UnknownModelError, match="did you mean mobilevig_ti"):
        load_model("mobilevig_tii")


def test_user_model_by_path(user_model_file):
    loaded = load_model(f"{user_model_file}:TinyNet")
    assert loaded.card.family == "user"
    assert loaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(UnknownModelError, match="could not be built with no arguments"):
        load_model(f"{user_model_file}:NeedsArgs")
    with pytest.raises(UnknownModelError, match="has no 'TinyNett'; did you mean TinyNet"):
        load_model(f"{user_model_file}:TinyNett")


def test_models_without_weights_are_built_the_same_every_time():
    a = edgekit.create_model("mobileone_s0", num_classes=3).state_dict()
    torch.manual_seed(123)  # the caller's RNG state does not matter ...
    b = edgekit.create_model("mobileone_s0", num_classes=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    before = torch.random.get_rng_state()
    edgekit.create_model("mobilenetv2_100")
    assert torch.equal(before, torch.random.get_rng_state())  # ... and is left as it was
