"""The kernel-level predictor wired in: the kernel sweep into the database, the fit from it, `latency predict` with
its interval and kernel table, `select` measuring the candidates whose interval crosses the budget, old database
files. Nothing here asserts on how long anything took: the sweep's samples are checked for what they are, and the
selection runs on a database of synthetic kernel times (a known law, far slower than this host) so that which
candidate's interval crosses the budget is decided by the law, not by the machine."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.latency import LatencyDB, calibrate, kernel_model_for, kernels_of, network_family, record
from edgekit.latency.kernels import COMPUTE_KINDS
from edgekit.latency.sweep import DEFAULT, QUICK, SPATIAL_ROOT, Spec, build, grid, spec_kernels, sweep
from edgekit.models import load_model

from .conftest import assert_user_error, run_cli

pytestmark = pytest.mark.xdist_group("kernel_predict")

NETS = """
import torch
from torch import nn


class Widths(nn.Module):
    width = 16

    def __init__(self):
        super().__init__()
        w = self.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1, groups=w), nn.BatchNorm2d(w), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.head = nn.Linear(2 * w, 10)

    def forward(self, x):
        y = self.pw(self.dw(self.stem(x)))
        return self.head((y * torch.sigmoid(y)).mean((2, 3)))


class W8(Widths):
    width = 8


class W24(Widths):
    width = 24


class W64(Widths):
    width = 64


class W40(Widths):
    width = 40


class Normed(Widths):
    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(4, 32)

    def forward(self, x):
        y = self.norm(self.pw(self.dw(self.stem(x))))
        return self.head(y.mean((2, 3)))
"""


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path = tmp_path_factory.mktemp("knets") / "knets.py"
    path.write_text(NETS)
    return path


# -- the sweep (one real run of the quick grid on ExecuTorch) ----------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A database the quick kernel sweep wrote (ExecuTorch on this host, 1 thread), and the command's JSON."""
    path = tmp_path_factory.mktemp("kdb") / "lat.sqlite"
    proc = run_cli(
        "latency", "calibrate", "--kernels", "--quick", "--target", "executorch", "--device", "host",
        "--threads", "1", "--db", str(path), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return path, json.loads(proc.stdout)


def test_quick_grid_specs_build_their_kernel():
    for spec in grid(QUICK):
        ks = spec_kernels(spec, 32)
        assert [k.kind for k in ks] == [spec.kind], spec
        assert ks[0].cin == spec.cin and ks[0].cout == spec.cout and ks[0].h == spec.h
    for spec in (Spec("linear", 64, 100, 7), Spec("linear", 256, 1000, 1), Spec("matmul", 32, 32, 7)):
        ks = spec_kernels(spec, 56)
        assert spec.kind in {k.kind for k in ks}, (spec, ks)
    net = build(grid(QUICK)[:2], 32)
    assert net(__import__("torch").zeros(1, 3, 32, 32)).shape == (1, 2)


def test_default_grid_times_the_ops_left_to_portable_kernels():
    """Ops a network of a family the fit never saw may hold: XNNPACK's other binary and unary ops, and what
    ExecuTorch runs on its portable kernels (comparisons, a mask's dtype conversion, `where`, `masked_fill`, `std`)."""
    one_per_variant = {s.variant: s for s in grid(DEFAULT) if s.variant}
    ops = {(k.kind, k.op) for s in one_per_variant.values() for k in spec_kernels(s, SPATIAL_ROOT)}
    for v in ("lt_to", "where", "masked_fill"):
        assert len(spec_kernels(one_per_variant[v], SPATIAL_ROOT)) == 2  # a comparison and what reads its mask
    assert {
        ("elementwise", "sub"), ("elementwise", "maximum"), ("elementwise", "abs"), ("elementwise", "div"),
        ("elementwise", "lt"), ("layout", "to"), ("elementwise", "gt"), ("elementwise", "where"),
        ("elementwise", "ne"), ("elementwise", "masked_fill"), ("reduce", "std"), ("activation", "silu"),
    } <= ops  # fmt: skip


def test_default_grid_times_each_activation_where_the_timer_resolves_it():
    """The per-op timers count whole microseconds: an activation over 6k-50k elements reads 1-20 us, and a SiLU at
    14x14 read 0.48 ns an element on LiteRT against 0.12-0.16 in MobileViT's layers (MobileViT +20 % on LiteRT).
    Each activation op is also timed over 100k elements or more (7 us and up)."""
    largest: dict[str, int] = {}
    for s in grid(DEFAULT):
        if s.kind == "activation":
            (k,) = spec_kernels(s, SPATIAL_ROOT)
            largest[k.op] = max(largest.get(k.op, 0), k.elements)
    assert set(largest) == {"hardswish", "gelu", "sigmoid", "silu", "softmax"}
    assert min(largest.values()) >= 100_000, largest


def test_default_grid_times_softmax_over_rows_of_16_to_3136_tokens():
    """A softmax pays per element and per row (`rows_op:softmax`): Swin's rows of 16 tokens ran at 0.6-0.9 ns an
    element here, LeViT's of 784 at 0.15-0.18. The grid times it over the row lengths attention networks have, so
    that those rates are not learned from networks alone."""
    rows: dict[int, int] = {}
    for s in grid(DEFAULT):
        if s.variant == "softmax":
            (k,) = spec_kernels(s, SPATIAL_ROOT)
            assert (k.kind, k.op) == ("activation", "softmax")
            rows[k.cin] = max(rows.get(k.cin, 0), k.elements // k.cin)  # row length -> the most rows
    assert set(rows) == {16, 49, 196, 784, 3136}
    assert rows[3136] >= 1024 and rows[16] >= 4096  # a first-stage attention's 3136 rows, Swin's windows


def test_sweep_times_both_kernels_of_a_mask_as_portable(tmp_path):
    """`(x < y).to(float)` on ExecuTorch: XNNPACK takes neither op; both kernels get a sample, marked portable."""
    specs = [Spec("elementwise", 2, 2, 32, variant="lt_to")]
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        res = sweep("executorch", "host", 1, db, grid_name=QUICK, specs=specs, runs=5)
        rows = db.kernel_samples("executorch", "host", 1)
    assert res.samples == 2 and not res.skipped
    assert sorted((r["kernel"]["kind"], r["kernel"]["op"], r["kernel"]["portable"]) for r in rows) == [
        ("elementwise", "lt", True), ("layout", "to", True)
    ]  # fmt: skip
    assert all(r["ms"] > 0 and r["kernel"]["module"] == "sweep/elementwise_lt_to_2x2_h32" for r in rows)


def test_executorch_sweep_times_a_batched_matmul_apart_from_its_operand_copies(tmp_path):
    """ExecuTorch runs windowed attention's q @ k^T as XNNPACK's batched GEMM and copies its operands first with its
    portable `expand_copy`. The sweep now splits its programs as the runtime runs them: the copies are samples of
    their own, as they are kernels of their own in a network. Lumped into the matmul's sample they had made a GEMM
    cost 1.2 us where Swin's took 0.26, and Swin's matmuls were predicted at 5x their time."""
    specs = [Spec("matmul", 16, 16, 32, variant="windows")]
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        sweep("executorch", "host", 1, db, grid_name=QUICK, specs=specs, runs=5)
        rows = db.kernel_samples("executorch", "host", 1)
    by = {(r["kernel"]["kind"], r["kernel"]["op"], r["kernel"]["portable"]): r for r in rows}
    assert ("layout", "expand", True) in by
    mm = by[("matmul", "matmul", False)]["kernel"]
    assert (mm["batch"], mm["gemm_m"], mm["gemm_n"], mm["gemm_k"]) == (64, 16, 16, 16)


def test_quick_sweep_writes_kernel_samples(swept):
    path, r = swept
    assert r["sweep"]["target"] == "executorch" and r["sweep"]["grid"] == "quick" and r["sweep"]["threads"] == 1
    assert r["sweep"]["samples"] >= 6
    with LatencyDB(path) as db:
        rows = db.kernel_samples("executorch", "host", 1)
        assert len(rows) == r["sweep"]["samples"]
        assert {row["source"] for row in rows} == {"sweep"} and all(row["ms"] > 0 for row in rows)
        assert {row["kernel"]["kind"] for row in rows} <= {"conv", "dwconv", "pwconv"}
        assert all(row["kernel"]["module"].startswith("sweep/") for row in rows)
        assert db.kernel_samples("executorch", "host", 2) == [] and db.rows() == []  # no reports: kernels only
        model = kernel_model_for(db, "executorch", "host", 1)
    assert model is not None and set(model.kinds) >= {"conv"}
    assert r["kernel_model"]["kinds"] == {k: f.samples for k, f in sorted(model.kinds.items())}


def test_predict_prints_interval_and_unseen_kinds(swept, nets):
    path, _ = swept
    args = ("--target", "executorch", "--threads", "1", "--input-size", "32", "--db", str(path))
    proc = run_cli("latency", "predict", f"{nets}:Normed", *args)
    assert proc.returncode == 0, proc.stderr
    assert "predicted" in proc.stdout and "90 % interval [" in proc.stdout
    # the quick grid times convolutions alone: the head's linear and the group norm were never seen
    assert "holds kernel kinds the fit has never seen:" in proc.stdout
    seen_line = next(ln for ln in proc.stdout.splitlines() if "never seen" in ln)
    assert "norm" in seen_line and "linear" in seen_line
    proc = run_cli("latency", "predict", f"{nets}:Normed", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["method"] == "kernels" and 0 < r["low_ms"] <= r["predicted_ms"] <= r["high_ms"]
    assert {"norm", "linear"} <= set(r["unseen_kinds"])
    table = r["kernels"]
    assert {row["module"] for row in table} >= {"stem.0", "dw.0", "pw.0", "head", "norm"}
    assert all(row["low"] <= row["ms"] <= row["high"] for row in table)
    assert sum(row["ms"] for row in table) == pytest.approx(r["kernels_ms"], rel=1e-3)
    stem = next(row for row in table if row["module"] == "stem.0")
    assert stem["kind"] == "conv" and stem["seen"] is True


def test_predict_without_kernel_model_says_how_to_get_one(tmp_path, nets):
    """The per-feature predictor's output stays, with a line naming the command that gives an interval."""
    from .test_latency import NETS as LINEAR_NETS
    from .test_latency import WIDTHS, _report, _truth

    src = tmp_path / "widths.py"
    src.write_text(LINEAR_NETS + "".join(f"\n\nclass W{w}(Widths):\n    width = {w}\n" for w in WIDTHS))
    from edgekit.latency import cost_features

    with LatencyDB(tmp_path / "lat.sqlite") as db:
        for i, w in enumerate(WIDTHS):
            f = cost_features(load_model(f"{src}:W{w}").model, 32)
            record(_report(f"{i:064x}", _truth(f)), db, features=f)
    proc = run_cli(
        "latency", "predict", f"{src}:W24", "--target", "onnx", "--threads", "2", "--input-size", "32",
        "--db", str(tmp_path / "lat.sqlite"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "leave-one-out median error" in proc.stdout
    assert "no interval" in proc.stdout and "latency calibrate --kernels --target onnx" in proc.stdout


def test_onnx_sweep_times_kernels_by_difference(tmp_path):
    """ONNX Runtime's rows are not joined to kernels: a kernel is the difference of its program and its prefix alone
    (one prefix program per distinct input shape), stored only where that difference is positive."""
    from edgekit.latency.sweep import sweep

    specs = [Spec("conv", 24, 24, 32, 3, 1), Spec("pwconv", 24, 48, 32)]  # one input shape: one prefix program
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        r = sweep("onnx", "host", 1, db, grid_name=QUICK, specs=specs, runs=10, warmup=2)
        rows = db.kernel_samples("onnx", "host", 1)
    assert r.programs == 3 and r.samples + len(r.skipped) == 2 and len(rows) == r.samples
    assert all(row["ms"] > 0 and row["kernel"]["module"].startswith("sweep/") for row in rows)
    assert {row["kernel"]["kind"] for row in rows} <= {"conv", "pwconv"}


def test_tflite_sweep_times_each_kernel_from_its_rows(tmp_path):
    """LiteRT's per-op rows on the host time each kernel of a spec by itself, one program per spec: `(x < y).to(float)`
    gives its comparison (outside XNNPACK: the builtin LESS) and its conversion a sample each, where the difference
    of two totals gave both to the comparison."""
    specs = [Spec("conv", 24, 24, 32, 3, 1), Spec("elementwise", 64, 64, 32, variant="lt_to")]
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        res = sweep("tflite", "host", 1, db, grid_name=QUICK, specs=specs, runs=5)
        rows = db.kernel_samples("tflite", "host", 1)
    assert res.programs == 2 and res.samples == 3 and not res.skipped
    kinds = sorted((r["kernel"]["module"], r["kernel"]["kind"], r["kernel"]["op"]) for r in rows)
    assert kinds == [
        ("sweep/conv_k3s1_24x24_h32", "conv", "conv2d"),
        ("sweep/elementwise_lt_to_64x64_h32", "elementwise", "lt"),
        ("sweep/elementwise_lt_to_64x64_h32", "layout", "to"),
    ], kinds


def test_calibrate_quick_needs_kernels(tmp_path):
    assert_user_error(
        run_cli("latency", "calibrate", "--quick", "--target", "executorch", "--db", str(tmp_path / "l.sqlite")),
        "--quick goes with --kernels",
    )


# -- the kernel model from the database: synthetic kernel times ----------------------------------------------------

KEY = ("onnx", "host", 1, "fp32")
COST = {"conv": 3e-5, "dwconv": 2e-4, "pwconv": 4e-5, "linear": 5e-5, "matmul": 5e-5}  # ms per MAC^0.9
MEMORY_COST = 2e-4  # ms per element^0.9


def _law(k) -> float:
    if k.kind in COMPUTE_KINDS:
        return COST[k.kind] * k.macs**0.9
    return MEMORY_COST * max(k.elements, 1) ** 0.9


@pytest.fixture(scope="module")
def law_db(tmp_path_factory, nets):
    """Kernel samples (and network totals) of the width networks at several sizes, timed by a known law with 10 %
    lognormal noise: predictions of the candidates are tens of ms, far over what this host measures."""
    path = tmp_path_factory.mktemp("lawdb") / "lat.sqlite"
    rng = np.random.default_rng(0)
    with LatencyDB(path) as db:
        for name in ("W8", "Widths", "W24", "W64"):
            for size in (16, 32, 48, 64):
                ks = [k for k in kernels_of(load_model(f"{nets}:{name}").model, size) if k.kind != "free"]
                samples = [(k.to_dict(), _law(k) * math.exp(rng.normal(0, 0.1))) for k in ks]
                total = sum(m for _, m in samples) + 0.05
                db.add_kernel_samples(
                    KEY, samples, "report", network=(f"{name}@{size}", [k.to_dict() for k in ks], total, None)
                )
    return path


def test_kernel_model_for_fits_the_law(law_db, nets):
    with LatencyDB(law_db) as db:
        assert kernel_model_for(db, "onnx", "host", 2) is None  # another key: nothing measured
        model = kernel_model_for(db, *KEY)
    assert model is not None and {"conv", "dwconv", "pwconv", "linear", "elementwise", "reduce"} <= set(model.kinds)
    ks = kernels_of(load_model(f"{nets}:W24").model, 40)  # a size the samples never had
    p = model.predict(ks)
    truth = sum(_law(k) for k in ks if k.kind != "free")
    assert p.ms == pytest.approx(truth, rel=0.2) and p.low < p.ms < p.high and not p.unseen_kinds


def test_select_measures_candidates_whose_interval_crosses_the_budget(law_db, nets, tmp_path):
    names = [f"{nets}:{n}" for n in ("W8", "W40", "W64")]
    with LatencyDB(law_db) as db:
        model = kernel_model_for(db, *KEY)
    assert model is not None
    preds = {n: model.predict(kernels_of(load_model(n).model, 32)) for n in names}
    small, mid, big = (preds[n] for n in names)
    budget = round((mid.low + mid.ms) / 2, 4)  # inside the middle one's interval
    assert small.high < budget < big.low  # only the middle one's interval crosses it
    proc = run_cli(
        "select", "--target", "onnx", "--threads", "1", "--input-size", "32", "--budget-ms", str(budget),
        "--candidates", ",".join(names), "--db", str(law_db), "--out", str(tmp_path / "sel"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["method"] == "kernels"
    crossed = r["measured_because_interval_crosses_budget"]
    assert [c["name"] for c in crossed] == [names[1]]
    c = crossed[0]
    assert c["low_ms"] <= budget < c["high_ms"] and c["measured_ms"] is not None
    by_name = {k["name"]: k for k in r["candidates"]}
    assert (
        by_name[names[2]]["status"] == "over budget (its whole interval)" and by_name[names[2]]["measured_ms"] is None
    )
    assert by_name[names[1]]["status"].startswith("measured (interval crosses the budget)")
    assert r["chosen"]["model"] in names[:2] and r["chosen"]["measured_ms"] <= budget
    assert json.loads((tmp_path / "sel" / "selection.json").read_text()) == r


# -- records and old database files ----------------------------------------------------------------------------------


def test_network_family_groups_widths_and_pruned_candidates():
    """The kernel model's spread is held out a family at a time: a zoo model's widths and what `select` prunes from
    them are one family; anything else is its own."""
    assert network_family("mobilenetv2_100") == network_family("mobilenetv2_140") == "mobilenetv2"
    assert network_family("/tmp/sel/candidates/mobilevig_ti_p30.pt") == network_family("mobilevig_s") == "mobilevig"
    assert network_family("nets.py:TinyNet") == "nets.py:TinyNet" and network_family("/x/pruned.pt") == "/x/pruned.pt"
    assert network_family(None) is None


def test_report_with_per_op_rows_stores_kernel_samples(tmp_path):
    """A report whose per-op rows name modules gives its kernels' times, and the network total, to the kernel
    tables (the model rebuilt from the report's reference)."""
    from .test_latency import _report

    rep = _report("a" * 64, 2.0, target="executorch", threads=1, model="mobilenetv2_100")
    rep["ops"] = [
        {"op": "Convolution (NHWC, F32) IGEMM", "module": "features.0.0", "count": 1, "ms": 0.3},
        {"op": "Convolution (NHWC, F32) DWConv", "module": "features.1.conv.0.0", "count": 1, "ms": 0.2},
        {"op": "Fully Connected (NC, F32) GEMM", "module": "classifier.1", "count": 1, "ms": 0.1},
        {"op": "Transpose (ND, X32)", "module": None, "count": 1, "ms": 0.05},
    ]
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        rid = record(rep, db)
        rows = db.kernel_samples("executorch", "host", 1)
        nets = db.kernel_networks("executorch", "host", 1)
    by_module = {r["kernel"]["module"]: (r["kernel"]["kind"], r["ms"]) for r in rows if r["kernel"]["kind"] != "layout"}
    assert by_module == {
        "features.0.0": ("conv", 0.3),
        "features.1.conv.0.0": ("dwconv", 0.2),
        "classifier.1": ("linear", 0.1),
    }
    # the kernels are ExecuTorch's (the report's runtime): XNNPACK's transpose goes to the NCHW <-> NHWC copies it
    # inserts (the input's, and the last conv's output before the pooling's partition ends)
    moves = [r for r in rows if r["kernel"]["kind"] == "layout"]
    assert {r["kernel"]["op"] for r in moves} == {"nchw_nhwc"} and sum(r["ms"] for r in moves) == pytest.approx(0.05)
    assert {r["source"] for r in rows} == {"report"} and len({r["network_id"] for r in rows}) == 1
    assert len(nets) == 1 and nets[0]["report_id"] == rid and nets[0]["total_ms"] == 2.0
    assert nets[0]["name"] == "mobilenetv2_100" and len(nets[0]["kernels"]) > 50


def test_database_from_before_the_kernel_tables_opens(tmp_path):
    path = tmp_path / "old.sqlite"
    from edgekit.latency.db import SCHEMA

    old_schema = SCHEMA[: SCHEMA.index("CREATE TABLE IF NOT EXISTS kernel_networks")]
    conn = sqlite3.connect(path)
    conn.executescript(old_schema)
    conn.execute(
        "INSERT INTO reports (created, artifact_sha256, target, device, threads, runs, median_ms, report) "
        "VALUES ('', ?, 'onnx', 'host', 2, 3, 1.5, '{}')",
        ("b" * 64,),
    )
    conn.commit()
    conn.close()
    with LatencyDB(path) as db:
        assert len(db.rows()) == 1 and db.kernel_samples("onnx", "host", 2) == []
        assert kernel_model_for(db, "onnx", "host", 2) is None
        db.add_kernel_samples(("onnx", "host", 2, "fp32"), [({"kind": "conv", "op": "convolution"}, 0.1)], "sweep")
    with LatencyDB(path) as db:
        assert len(db.kernel_samples("onnx", "host", 2)) == 1
    # a kernel table that is not edgekit's: said to be damaged, not a traceback
    bad = tmp_path / "bad.sqlite"
    conn = sqlite3.connect(bad)
    conn.execute("CREATE TABLE kernel_samples (id INTEGER, what TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(EdgekitError, match="is damaged .*move it aside"):
        LatencyDB(bad)


# -- phones: the sweep as a bundle, and its reports imported --------------------------------------------------------


def test_phone_calibrate_lists_missing_and_writes_a_bundle(tmp_path, monkeypatch):
    """`latency calibrate --kernels --device android-app` (no phone here): which measurements are missing, the bundle
    of small artifacts with its manifest, and a report of one of them imported back as kernel samples."""
    from edgekit.latency import sweep as sweep_module

    specs = [Spec("dwconv", 64, 64, 32, 3, 1), Spec("pwconv", 32, 48, 32)]
    monkeypatch.setitem(sweep_module.GRIDS, QUICK, lambda: list(specs))
    db_path, where = tmp_path / "lat.sqlite", tmp_path / "bundle"
    args = ("--kernels", "--quick", "--target", "executorch", "--device", "android-app", "--db", str(db_path))
    proc = run_cli("latency", "calibrate", *args, "--bundle", str(where), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["missing"] == [s.name for s in specs] and r["of"] == 2 and r["device"] == "android-app"
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["schema"] == "edgekit-kernel-sweep/1" and manifest["target"] == "executorch"
    assert len(manifest["programs"]) == 2
    for program, spec in zip(manifest["programs"], specs):
        art = where / program["artifact"]
        assert art.suffix == ".pte" and art.stat().st_size > 0
        assert json.loads((where / f"{program['artifact']}.json").read_text())["sha256"] == program["sha256"]
        assert program["specs"][0]["name"] == spec.name and program["specs"][0]["module"] == "k0"
        assert {k["kind"] for k in program["kernels"] if k["module"] == "k0.0"} == {spec.kind}
    # what the app would report for the first program: its per-op rows, by module
    from .test_latency import _report

    n = r["threads"]  # the device definition's thread count
    rep = _report(manifest["programs"][0]["sha256"], 0.5, target="executorch", device="android-app", threads=n)
    rep.update(min_ms=0.5, mean_ms=0.5, iqr_ms=0.0)
    rep["ops"] = [
        {"op": "Convolution (NHWC, F32) DWConv", "module": "k0.0", "count": 1, "ms": 0.12},
        {"op": "Fully Connected (NC, F32) GEMM", "module": "p0.proj", "count": 1, "ms": 0.03},
    ]
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "r0.json").write_text(json.dumps(rep))
    proc = run_cli("latency", "calibrate", *args, "--bundle", str(where), "--reports", str(reports), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"imported": {"r0.json": 1}}
    with LatencyDB(db_path) as db:
        rows = db.kernel_samples("executorch", "android-app", n)
    assert [(row["kernel"]["kind"], row["kernel"]["module"]) for row in rows] == [("dwconv", f"sweep/{specs[0].name}")]
    assert rows[0]["ms"] == pytest.approx(0.12)
    # now only the second is missing (and its bundle is written again, alone)
    proc = run_cli("latency", "calibrate", *args, "--bundle", str(tmp_path / "b2"))
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 kernel measurements (quick grid) still missing: pwconv 1" in proc.stdout
    assert len(json.loads((tmp_path / "b2" / "manifest.json").read_text())["programs"]) == 1
    assert_user_error(run_cli("latency", "calibrate", *args, "--reports", str(reports)), "--reports needs --bundle")


def test_prune_budget_rounds_channels_to_the_tile_where_the_kernel_model_sees_a_cliff(tmp_path, nets):
    """Kernel samples timed by a law with a sharp 8-channel cliff (a 1x1 of N output channels costs what one of
    ceil(N / 8) * 8 does): the kernel model's padding term says so, and `prune --budget-ms` keeps multiples of 8."""
    from edgekit.latency import cost_features
    from edgekit.latency.kernels import Kernel
    from edgekit.select import channel_tile, prune_to_budget

    from .test_latency import _report, _truth

    rng = np.random.default_rng(1)
    key = ("onnx", "host", 2, "fp32")
    samples = []
    for _ in range(40):
        cin, n, h = int(rng.integers(16, 129)), int(rng.integers(17, 129)), int(rng.choice([7, 14, 28]))
        m = h * h
        k = Kernel(
            "pwconv", "conv2d", "x", cin=cin, cout=n, h=h, w=h, out_h=h, out_w=h, k=1, stride=1, groups=1,
            gemm_m=m, gemm_n=n, gemm_k=cin, batch=1, elements=m * n, macs=m * n * cin,
            bytes_read=4 * (m * cin + cin * n), bytes_written=4 * m * n,
        )  # fmt: skip
        samples.append((k.to_dict(), 1e-5 * m * cin * (-(-n // 8) * 8) * math.exp(rng.normal(0, 0.02))))
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        db.add_kernel_samples(key, samples, "sweep")
        assert channel_tile(kernel_model_for(db, *key)) == 8
        for i, w in enumerate((8, 16, 24, 64)):  # the per-feature predictor the budget search runs on
            for size in (16, 32):
                f = cost_features(load_model(f"{nets}:W{w}" if w != 16 else f"{nets}:Widths").model, size)
                record(_report(f"{i:03d}{size:061x}", _truth(f)), db, features=f)
        ref = f"{nets}:W64"
        full = _truth(cost_features(load_model(ref).model, 32))
        r = prune_to_budget(
            ref, "onnx", "host", round(0.85 * full, 4), threads=2, db=db, out=tmp_path / "p.pt", input_size=32,
            confirm=False,
        )  # fmt: skip
    assert r["channel_tile"] == 8
    pruned = load_model(str(tmp_path / "p.pt")).model
    from torch import nn

    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    assert widths and all(c % 8 == 0 for c in widths), widths
    assert r["after"]["macs"] < r["before"]["macs"]
    # the rounding itself: 30 % of 64 and 128 channels leaves 45 and 90, the tile makes them 48 and 96
    from edgekit.prune import channel_groups, get_method
    from edgekit.select import _keep_per_group

    base = load_model(ref).model
    groups = channel_groups(base, 32)
    scores = get_method("magnitude").group_scores(base, groups)
    ratios = {g.id: 0.3 for g in groups}
    assert sorted(len(v) for v in _keep_per_group(scores, groups, ratios).values()) == [45, 90]
    assert sorted(len(v) for v in _keep_per_group(scores, groups, ratios, tile=8).values()) == [48, 96]


def test_calibrate_profiles_per_op_so_a_fresh_database_gets_a_kernel_model(tmp_path, nets):
    """`latency calibrate` (and `select` on a fresh database, which calls it) on ExecuTorch/host profiles each
    network per op: the database holds each network's kernels with its total, and the kernel model is fitted on
    them, so predictions carry an interval from the first selection on."""
    models = tuple(f"{nets}:{n}" for n in ("W8", "Widths", "W24", "W40", "W64", "Normed"))
    with LatencyDB(tmp_path / "l.sqlite") as db:
        assert kernel_model_for(db, "executorch", "host", 1) is None
        calibrate("executorch", "host", 1, db, input_size=32, models=models)
        nets_ = db.kernel_networks("executorch", "host", 1)
        assert len(nets_) == 6 and all(n["total_ms"] > 0 and n["kernels"] for n in nets_)
        samples = db.kernel_samples("executorch", "host", 1)
        assert {s["network_id"] for s in samples} == {n["id"] for n in nets_}
        km = kernel_model_for(db, "executorch", "host", 1)
        assert km is not None and {"conv", "dwconv", "pwconv"} <= set(km.kinds)
        assert km.overhead["networks"] == 6
        p = km.predict(kernels_of(load_model(f"{nets}:W24").model, 32))
        assert p.low < p.ms < p.high
