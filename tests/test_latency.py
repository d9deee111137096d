"""Latency database, cost features, predictor, selection under a budget and latency-aware pruning."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.latency import LatencyDB, cost_features, record
from edgekit.latency.features import FEATURES
from edgekit.latency.predictor import MIN_POINTS, fit, fit_from_db, leave_one_out, quality
from edgekit.models import count_macs, load_model

from .conftest import assert_user_error, run_cli

pytestmark = pytest.mark.xdist_group("latency")

NETS = """
import torch
from torch import nn


def block(cin, cout, k, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.BatchNorm2d(cout), nn.ReLU())


class Widths(nn.Module):
    width = 16

    def __init__(self):
        super().__init__()
        w = self.width
        self.stem = block(3, w, 3)
        self.dw = block(w, w, 3, groups=w)
        self.pw = block(w, 2 * w, 1)
        self.head = nn.Linear(2 * w, 10)

    def forward(self, x):
        return self.head(self.pw(self.dw(self.stem(x))).mean((2, 3)))
"""
WIDTHS = (8, 12, 16, 24, 32, 48, 64, 96)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path = tmp_path_factory.mktemp("nets") / "widths.py"
    path.write_text(NETS + "".join(f"\n\nclass W{w}(Widths):\n    width = {w}\n" for w in WIDTHS))
    return path


# -- features ------------------------------------------------------------------------------------------


def test_cost_features_count_each_kind():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 16, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    f = cost_features(net, 8)
    assert f["conv_gmacs"] * 1e9 == pytest.approx(8 * 8 * 8 * 3 * 9)
    assert f["dwconv_gmacs"] * 1e9 == pytest.approx(8 * 8 * 8 * 9)
    assert f["conv1x1_gmacs"] * 1e9 == pytest.approx(16 * 8 * 8 * 8)
    assert f["gemm_gmacs"] * 1e9 == pytest.approx(16 * 4)
    assert f["elementwise_melems"] * 1e6 == pytest.approx(8 * 8 * 8)  # the ReLU
    total = sum(f[k] for k in FEATURES if k.endswith("gmacs")) * 1e9
    assert total == pytest.approx(count_macs(net, 8))


def test_cost_features_follow_pruning(nets):
    """A pruned network's features are those of its smaller shapes: what lets the predictor skip compiling."""
    small, big = (cost_features(load_model(f"{nets}:W{w}").model, 32) for w in (16, 32))
    assert big["conv1x1_gmacs"] == pytest.approx(4 * small["conv1x1_gmacs"])
    assert big["dwconv_gmacs"] == pytest.approx(2 * small["dwconv_gmacs"])


# -- predictor -----------------------------------------------------------------------------------------

COSTS = {
    "conv_gmacs": 40.0,
    "conv1x1_gmacs": 25.0,
    "dwconv_gmacs": 90.0,
    "gemm_gmacs": 30.0,
    "elementwise_melems": 0.8,
    "move_mbytes": 0.05,
    "ops": 0.01,
}


def _truth(f: dict) -> float:
    """A latency that is exactly linear in the features: the predictor must find it."""
    return 0.2 + sum(c * f[k] for k, c in COSTS.items())


@pytest.fixture(scope="module")
def points(nets):
    return [(cost_features(load_model(f"{nets}:W{w}").model, s), None) for w in WIDTHS for s in (32, 64)]


def test_predictor_recovers_a_linear_cost_model(points):
    pts = [(f, _truth(f)) for f, _ in points]
    pred = fit(pts, "onnx", "host", 2)
    assert pred.points == len(pts)
    for f, ms in pts:
        assert pred.predict(f) == pytest.approx(ms, rel=0.05)
    assert pred.loo["mdape"] < 0.05 and pred.loo["spearman"] > 0.99


def test_predictor_quality_and_too_few_points(points):
    q = quality([1.0, 2.0, 4.0], [1.1, 1.8, 4.0])
    assert q == {"points": 3, "spearman": 1.0, "mdape": 0.1, "max_ape": 0.1}
    assert len(leave_one_out([(f, _truth(f)) for f, _ in points[:MIN_POINTS]])) == MIN_POINTS
    with pytest.raises(EdgekitError, match="needs at least 6: run `edgekit latency calibrate --target onnx"):
        fit([(f, 1.0) for f, _ in points[:3]], "onnx", "host", 2)


def _report(sha: str, ms: float, target="onnx", device="host", threads=2, model=None) -> dict:
    return {
        "schema": "edgekit-latency-report/1",
        "created": "2026-11-21T00:00:00+00:00",
        "device": {"name": device},
        "runtime": {"name": target},
        "threads": threads,
        "warmup": 1,
        "runs": 3,
        "artifact": {"sha256": sha, "model": model, "input_shape": [1, 3, 32, 32]},
        "samples_ms": [ms, ms, ms],
        "median_ms": ms,
        "p90_ms": ms,
    }


@pytest.fixture
def linear_db(tmp_path, points):
    """A database of reports whose latencies follow the linear cost model exactly."""
    db = LatencyDB(tmp_path / "lat.sqlite")
    for i, (f, _) in enumerate(points):
        record(_report(f"{i:064x}", _truth(f)), db, features=f)
    yield db
    db.close()


def test_db_keys_latest_export_and_fit(linear_db, points):
    rows = linear_db.rows("onnx", "host", 2)
    assert len(rows) == len(points) and rows[0]["features"] == points[0][0]
    linear_db.add(_report(f"{0:064x}", 123.0))  # a newer report of the same artifact, no features
    assert linear_db.latest(f"{0:064x}", "onnx", "host", 2)["median_ms"] == 123.0
    assert linear_db.rows("onnx", "host", 4) == [] and linear_db.rows("tflite") == []
    exported = json.loads(linear_db.export("json", target="onnx"))
    assert len(exported) == len(points) + 1 and exported[-1]["median_ms"] == 123.0
    assert fit_from_db(linear_db, "onnx", "host", 2).points == len(points)
    with pytest.raises(EdgekitError, match="unknown export format 'xml'"):
        linear_db.export("xml")


def test_db_unusable_path(tmp_path):
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(EdgekitError, match="is damaged .*move it aside"):
        LatencyDB(bad)


def test_latency_predict_cli(linear_db, nets):
    proc = run_cli(
        "latency",
        "predict",
        f"{nets}:W24",
        "--target",
        "onnx",
        "--threads",
        "2",
        "--input-size",
        "48",
        "--db",
        str(linear_db.path),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    truth = _truth(cost_features(load_model(f"{nets}:W24").model, 48))  # 48: a size the fit never saw
    assert r["predicted_ms"] == pytest.approx(truth, rel=0.05) and r["input_size"] == 48
    assert_user_error(
        run_cli("latency", "predict", "mobileone_s0", "--target", "tflite", "--db", str(linear_db.path)),
        "0 measured model(s) for tflite",
        "latency calibrate",
    )


# -- selection and latency-aware pruning (predictions from the linear database; confirmations measured) ---


def test_select_confirms_the_most_accurate_fitting_model(linear_db, tmp_path):
    out = tmp_path / "sel"
    proc = run_cli(
        "select",
        "--target",
        "onnx",
        "--budget-ms",
        "1000",
        "--threads",
        "2",
        "--input-size",
        "32",
        "--candidates",
        "mobileone_s0,mobilenetv2_100,mobilenetv2_100@0.5",
        "--db",
        str(linear_db.path),
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    c = r["chosen"]
    assert c["model"] == "mobilenetv2_100" and c["accuracy"] == 71.8  # the papers' top-1: 71.8 beats 71.4
    assert c["measured_ms"] <= 1000 and c["artifact"].endswith(".onnx")
    manifest = json.loads(open(c["manifest"]).read())
    assert manifest["verification"]["status"] == "passed"
    measured = linear_db.rows("onnx", "host", 2, sha256=manifest["sha256"])
    assert measured and measured[-1]["median_ms"] == pytest.approx(c["measured_ms"], abs=1e-3)
    pruned = next(k for k in r["candidates"] if k["name"] == "mobilenetv2_100@0.5")
    assert pruned["accuracy"] is None and "unknown" in pruned["accuracy_source"]
    assert r["pareto_front"] and (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "selection.json").read_text()) == r
    page = tmp_path / "page.html"
    assert run_cli("report", str(out), "--db", str(linear_db.path), "--out", str(page)).returncode == 0
    assert "data:image/png;base64," in page.read_text() and "mobilenetv2_100" in page.read_text()


def test_select_nothing_fits(linear_db, tmp_path):
    proc = run_cli(
        "select",
        "--target",
        "onnx",
        "--budget-ms",
        "0.001",
        "--threads",
        "2",
        "--input-size",
        "32",
        "--candidates",
        "mobileone_s0",
        "--db",
        str(linear_db.path),
        "--out",
        str(tmp_path / "s"),
    )
    assert_user_error(proc, "no candidate was measured within 0.001 ms", "raise the budget")
    assert_user_error(
        run_cli("select", "--target", "onnx", "--budget-ms", "-1", "--db", str(linear_db.path)),
        "positive latency budget",
    )


def test_prune_to_budget_chooses_stage_ratios(linear_db, nets, tmp_path):
    from edgekit.select import prune_to_budget

    ref = f"{nets}:W64"
    full = _truth(cost_features(load_model(ref).model, 32))
    budget = round(0.6 * full, 4)
    r = prune_to_budget(
        ref, "onnx", "host", budget, threads=2, db=linear_db, out=tmp_path / "p.pt", input_size=32, confirm=False
    )
    assert r["predicted_ms"] <= budget < r["predicted_ms_unpruned"]
    assert r["predicted_ms"] == pytest.approx(budget, rel=0.15)  # pruned to the budget, not far below it
    assert len(r["stage_ratios"]) == 4 and max(r["stage_ratios"]) > 0
    pruned = load_model(str(tmp_path / "p.pt"))
    assert count_macs(pruned.model, 32) == r["after"]["macs"] < r["before"]["macs"]
    truth = _truth(cost_features(pruned.model, 32))
    assert truth <= budget * 1.01  # the linear database's truth agrees with the prediction
    with torch.no_grad():
        assert pruned.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_prune_budget_cli_errors(tmp_path):
    assert_user_error(
        run_cli("prune", "mobileone_s0", "--budget-ms", "5", "--out", str(tmp_path / "p.pt")),
        "--budget-ms needs --target",
    )
    assert_user_error(run_cli("prune", "mobileone_s0", "--out", str(tmp_path / "p.pt")), "give --method and --ratio")
    assert_user_error(
        run_cli(
            "prune",
            "mobileone_s0",
            "--budget-ms",
            "5",
            "--target",
            "onnx",
            "--ratio",
            "0.3",
            "--out",
            str(tmp_path / "p.pt"),
        ),
        "not both",
    )
    assert_user_error(
        run_cli(
            "prune",
            "mobileone_s0",
            "--budget-ms",
            "5",
            "--target",
            "onnx",
            "--db",
            str(tmp_path / "l.sqlite"),
            "--out",
            str(tmp_path / "p.bin"),
        ),
        "should name a checkpoint file ending in .pt",
    )


@pytest.mark.heavy
def test_select_executorch_host_budget_6ms(tmp_path):
    """Issues 5 and 18: on a fresh database, select calibrates (profiling each network per op, so the kernel model is
    fitted), predicts every candidate with an interval, measures those whose interval crosses the budget, and the
    chosen model measures within 6 ms on ExecuTorch here."""
    proc = run_cli(
        "select",
        "--target",
        "executorch",
        "--device",
        "host",
        "--budget-ms",
        "6",
        "--json",
        "--db",
        str(tmp_path / "lat.sqlite"),
        "--out",
        str(tmp_path / "sel"),
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    art = r["chosen"]["artifact"]
    assert r["chosen"]["measured_ms"] <= 6
    assert r["calibrated_now"] and r["method"] == "kernels"
    assert all(c["low_ms"] <= c["predicted_ms"] <= c["high_ms"] for c in r["candidates"])
    crossed = r["measured_because_interval_crosses_budget"]
    assert all(c["low_ms"] <= 6 < c["high_ms"] and c["measured_ms"] is not None for c in crossed)
    assert {c["name"] for c in crossed} == {c["name"] for c in r["candidates"] if c["low_ms"] <= 6 < c["high_ms"]}
    from edgekit.profile import profile

    again = profile(art, runs=30, warmup=5)  # measured again, apart from select
    assert again["median_ms"] <= 6 * 1.05
