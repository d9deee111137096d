"""Per-op latency mapped to modules: ONNX Runtime's timed nodes carry the zoo models' module paths, and their module
tree is in the report (schema-checked), in the latency database and in `edgekit profile --per-op`.

The artifacts are test_compile's (`shared_compile`, the same call and xdist group): one export per model.
"""

from __future__ import annotations

import copy
import json
import sqlite3

import numpy as np
import pytest

from edgekit.compile.attribution import op_rows, tree_rows
from edgekit.compile.onnx import NAME_SCOPES, onnx_op_profile
from edgekit.errors import EdgekitError
from edgekit.latency import LatencyDB
from edgekit.latency import db as dbmod
from edgekit.profile import MODULE_DEPTH, module_fields, profile, validate_report

from .conftest import run_cli
from .test_compile import SMALL, SMALLEST

pytestmark = pytest.mark.xdist_group("zoo_compiled")

# a stage of each model, which holds blocks of its own
STAGE = {
    "mobilevig_ti": "local_backbone",
    "greedyvig_s": "backbone",
    "mobileone_s0": "stage1",
    "mobilenetv2_100": "features",
}
ROUNDING = 1e-4  # each row's ms is rounded to 4 places, and each node's sum of them again


def onnx_artifact(shared_compile, name: str):
    return shared_compile(name, "onnx", input_size=SMALL, num_classes=10).artifact


@pytest.fixture(scope="module")
def reports(shared_compile):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = profile(onnx_artifact(shared_compile, name), runs=3, warmup=1, threads=1, per_op=True)
        return cache[name]

    return get


def close(a: float, b: float, terms: int) -> bool:
    return abs(a - b) <= ROUNDING * (terms + 1)


@pytest.mark.parametrize("name", SMALLEST)
def test_zoo_op_time_carries_module_paths(reports, name):
    r = reports(name)
    ops = r["ops"]
    total = sum(o["ms"] for o in ops)
    scoped = [o for o in ops if o["module"] is not None]
    assert sum(o["ms"] for o in scoped) >= 0.95 * total, [o for o in ops if o["module"] is None]
    assert r["attributed"] >= 0.95
    assert not any(o["module"].startswith("model.") or o["module"] == "model" for o in scoped)  # the user's paths
    # ORT's NCHWc layout conversions (x86) are credited to the node they convert for
    assert all(o["module"] is not None for o in ops if o["op"].startswith("Reorder"))

    tree = r["modules"]
    assert tree["module"] == "" and tree["share"] <= 1
    assert close(tree["ms"], sum(o["ms"] for o in scoped), len(scoped))
    assert close(tree["unattributed_ms"], total - sum(o["ms"] for o in scoped), len(ops))
    stage = next(c for c in tree["children"] if c["module"] == STAGE[name])
    assert len(stage["children"]) >= 2 and all(c["module"].startswith(STAGE[name] + ".") for c in stage["children"])
    assert close(stage["ms"], stage["self_ms"] + sum(c["ms"] for c in stage["children"]), len(stage["children"]))
    assert [c["ms"] for c in stage["children"]] == sorted((c["ms"] for c in stage["children"]), reverse=True)
    # every row's time is in the node of its module
    nodes = {n["module"]: n for _, n in tree_rows(tree)}
    for o in scoped:
        assert o["module"] in nodes and nodes[o["module"]]["self_ms"] >= o["ms"] - ROUNDING
    validate_report(r)


def synthetic_onnx(path, scopes: bool = True):
    """conv -> relu (module a) -> the QDQ quantizer's QuantizeLinear/DequantizeLinear (no scope) -> conv (b) -> flatten
    (the model's own forward), exported as edgekit writes ONNX: each node's name scopes in its metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def node(op, inputs, output, name, *where, **attrs):
        n = helper.make_node(op, inputs, [output], name=name, **attrs)
        if scopes and where:
            entry = n.metadata_props.add()
            entry.key, entry.value = NAME_SCOPES, repr(["", "model", *where, op.lower()])
        return n

    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)), "w2": rng.standard_normal((8, 8, 1, 1)), "s": 0.05}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array(0, np.int8), "z"))
    nodes = [
        node("Conv", ["input", "w1"], "c1", "node_Conv_0", "model.a", "model.a.conv", pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], "r1", "node_relu", "model.a", "model.a.act"),  # ORT fuses it into the conv
        node("QuantizeLinear", ["r1", "s", "z"], "q", "r1_QuantizeLinear"),
        node("DequantizeLinear", ["q", "s", "z"], "dq", "r1_DequantizeLinear"),
        node("Conv", ["dq", "w2"], "c2", "node_Conv_1", "model.b"),
        node("Flatten", ["c2"], "logits", "node_flatten"),
    ]
    if scopes:
        entry = nodes[-1].metadata_props.add()
        entry.key, entry.value = NAME_SCOPES, repr(["", "model", "flatten"])
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_ort_nodes_map_to_the_modules_they_were_exported_from(tmp_path):
    x = np.ones((1, 3, 16, 16), np.float32)
    rows = onnx_op_profile(synthetic_onnx(tmp_path / "m.onnx"), x, threads=1, runs=2)
    where = {(r["op"], r["module"]) for r in rows}
    assert ("Conv", "a.conv") in where and ("Conv", "b") in where  # a fused Conv+Relu is the conv's
    assert ("Flatten", "") in where  # the model's own forward
    assert all(r["module"] is not None for r in rows), rows  # QDQ and NCHWc reorders: the module they convert for
    assert {r["module"] for r in rows if r["op"] == "DequantizeLinear"} == {"b"}
    assert {r["module"] for r in rows if r["op"] == "QuantizeLinear"} <= {"a.act", "a.conv"}  # the fused conv's
    # an artifact without scopes (compiled before edgekit kept them): the same rows, no module, no tree
    plain = onnx_op_profile(synthetic_onnx(tmp_path / "p.onnx", scopes=False), x, threads=1, runs=2)
    assert plain and all(r["module"] is None for r in plain) and module_fields(plain) == {}


def test_database_keeps_the_module_tree(reports, tmp_path):
    r = reports("mobilevig_ti")
    with LatencyDB(tmp_path / "lat.sqlite") as db:
        rid = db.add(r)
        times = db.module_times(rid)
        assert [(t["module"], t["ms"], t["depth"]) for t in times] == [
            (n["module"], n["ms"], d) for d, n in tree_rows(r["modules"])
        ]
        root = r["modules"]
        assert times[0] == {"module": "", "depth": 0, **{k: root[k] for k in ("ms", "self_ms", "share")}}
        key = dict(sha256=r["artifact"]["sha256"], target="onnx", device=r["device"]["name"], threads=r["threads"])
        assert db.module_times(**key) == times
        shallow = db.module_times(rid, max_depth=1)
        assert [t["module"] for t in shallow] == ["", *(c["module"] for c in r["modules"]["children"])]
        assert db.module_times(rid + 1) == [] and db.module_times(**{**key, "threads": 7}) == []
        with pytest.raises(EdgekitError, match="report id"):
            db.module_times(sha256=key["sha256"])
        # a report without module paths (TFLite's benchmark_model over adb) has no tree, in the report or here
        plain = copy.deepcopy(r)
        plain["ops"] = [{**o, "module": None} for o in plain["ops"]]
        for k in ("modules", "attributed"):
            plain.pop(k)
        plain.update(module_fields(plain["ops"]))
        assert "modules" not in plain and "attributed" not in plain
        assert db.module_times(db.add(validate_report(plain))) == []
        # a report that has module rows and no tree (a demo app's) gets its tree from the rows
        app = copy.deepcopy(r)
        app.pop("modules")
        assert [t["module"] for t in db.module_times(db.add(app))] == [t["module"] for t in times]
        exported = json.loads(db.export())
        assert exported[0]["modules"] == r["modules"] and exported[0]["attributed"] == r["attributed"]


def test_database_from_before_module_times_opens_and_gains_them(reports, tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(dbmod.SCHEMA.split("CREATE TABLE IF NOT EXISTS module_times")[0])
    with LatencyDB(path) as db:
        assert db.rows() == []
        assert db.module_times(db.add(reports("mobileone_s0")))[0]["module"] == ""
    with sqlite3.connect(path) as conn:  # another program's table of that name is not edgekit's database
        conn.executescript("DROP TABLE module_times; CREATE TABLE module_times (x INTEGER);")
    with pytest.raises(EdgekitError, match="is damaged"):
        LatencyDB(path)


def test_schema_bounds_the_module_tree():
    rows = op_rows([("Conv", ".".join(f"m{i}" for i in range(MODULE_DEPTH + 5)), 1.0), ("Add", None, 1.0)])
    fields = module_fields(rows)
    assert fields["attributed"] == 0.5 and fields["modules"]["unattributed_ms"] == 1.0
    depth, deepest = max(tree_rows(fields["modules"]), key=lambda dn: dn[0])
    assert depth == MODULE_DEPTH and deepest["children"] == [] and deepest["ms"] == 1.0  # deeper modules are cut
    report = {
        "schema": "edgekit-latency-report/1",
        "device": {"name": "host"},
        "runtime": {"name": "onnx"},
        "artifact": {"sha256": "0" * 64},
        "threads": 1,
        "warmup": 0,
        "runs": 1,
        "samples_ms": [2.0],
        "median_ms": 2.0,
        "min_ms": 2.0,
        "p90_ms": 2.0,
        "iqr_ms": 0.0,
        "ops": rows,
        **fields,
    }
    validate_report(report)
    bad = copy.deepcopy(report)
    bad["modules"]["children"][0]["share"] = 2.0
    with pytest.raises(EdgekitError, match="at modules/children/0/share"):
        validate_report(bad)
    bad = copy.deepcopy(report)
    bad["modules"]["module"] = "m0"
    with pytest.raises(EdgekitError, match="at modules/module"):
        validate_report(bad)
    bad = copy.deepcopy(report)
    node = bad["modules"]
    while node["children"]:
        node = node["children"][0]
    node["children"] = [{"module": "x", "ms": 0.0, "children": []}]  # a level more than a report keeps
    with pytest.raises(EdgekitError, match="nested more than"):
        validate_report(bad)


def test_cli_prints_the_module_tree(shared_compile, tmp_path):
    artifact = onnx_artifact(shared_compile, "mobilevig_ti")
    db = tmp_path / "lat.sqlite"
    args = ("profile", str(artifact), "--runs", "3", "--warmup", "1", "--threads", "1", "--per-op", "--db", str(db))
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "per op (time per inference)" in text and "module" in text.split("per op", 1)[1].splitlines()[2]
    assert "per module (time per inference, 3 levels deep)" in text and "of op time has a module" in text
    tree = text.split("per module", 1)[1]
    assert "(model)" in tree and "  local_backbone " in tree and "      local_backbone.0.mlp " in tree
    assert "local_backbone.0.mlp.act" not in tree  # 3 levels deep
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["modules"]["children"] and report["attributed"] >= 0.95
    with LatencyDB(db) as database:
        latest = database.rows()[-1]
        assert database.module_times(latest["id"])[0]["ms"] == report["modules"]["ms"]


# -- LiteRT over adb: benchmark_model's run order names each builtin operator by its output tensor ------------------

RUN_ORDER_HEAD = (
    "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "============================== Run Order ==============================\n"
    "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]"
    "\t[times called]\t[Name]\n"
)  # the layout of tests/data/adb/benchmark_model_op_profiling_1.txt (a real run)


def test_litert_run_order_rows_carry_the_modules_of_their_output_tensors(shared_compile):
    """`benchmark_model --use_xnnpack=false --enable_op_profiling=true` on a phone times each builtin operator and
    names it by its output tensor; the host maps the names through the artifact (litert-torch's module scopes). The
    run order here is written in the tool's layout from the artifact's own operators: no phone is attached."""
    from edgekit.compile import get_target
    from edgekit.compile.tflite import TFLiteRunner
    from edgekit.profile.adb import parse_benchmark_model

    result = shared_compile("mobilenetv2_100", "tflite", input_size=SMALL, num_classes=10)
    it = TFLiteRunner(result.artifact, None).it
    tensors = {t["index"]: t["name"] for t in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]
    lines = [
        f"\t{op['op_name']:>24}\t{0.1 * i:>17.3f}\t{0.05:>9.3f}\t{0.01 * (1 + i % 7):>9.3f}\t  1.000%\t  1.000%"
        f"\t     0.000\t        1\t[{tensors[op['outputs'][0]]}]:{i}"
        for i, op in enumerate(ops)
    ]
    parsed = parse_benchmark_model("count=10 first=1 curr=1 min=1 max=2 avg=1500 std=1\n" + RUN_ORDER_HEAD
                                   + "\n".join(lines) + "\n\n")  # fmt: skip
    names = [n["name"] for n in parsed["nodes"]]
    assert len(names) == len(ops) and all(names)
    modules = get_target("tflite").op_modules(
        result.artifact, result.manifest, names, [n["op"] for n in parsed["nodes"]]
    )
    rows = op_rows((n["op"], modules[n["name"]], n["ms"]) for n in parsed["nodes"])
    fields = module_fields(rows)
    assert fields and fields["attributed"] >= 0.95, rows
    # the one operator without: the classifier, whose result the converter names after the signature's output
    assert [n for n in names if modules[n] is None] == ["serving_default_output_0_output"]
    # a fused conv + BN + ReLU6 by its convolution's module
    assert modules[names[-2]] == "pool" and modules[names[-3]] == "features.18.0"
    depthwise = {r["module"] for r in rows if r["op"] == "DEPTHWISE_CONV_2D"}
    assert {"features.1.conv.0.0", "features.17.conv.1.0"} <= depthwise


def test_litert_times_each_xnnpack_kernel_on_the_host_by_module(shared_compile):
    """LiteRT's own profiler (its C API: the Python `Interpreter` has none) times XNNPACK's kernels one by one on
    this host. Each row is placed on the module of the TFLite node it runs (a 1x1 conv as XNNPACK's GEMM, a PAD
    fused into the depthwise conv after it), a fused conv + BN + ReLU6 by its convolution's module, and the rows join
    to the export's kernels: every convolution and the classifier timed."""
    from edgekit.latency.kernels import kernels_from_rows, kernels_of
    from edgekit.models import load_model

    result = shared_compile("mobilenetv2_100", "tflite", input_size=SMALL, num_classes=10)
    rep = profile(result.artifact, runs=5, warmup=2, threads=1, per_op=True)
    rows = rep["ops"]
    ops = {r["op"] for r in rows}
    assert {"Convolution (NHWC, F32) DWConv", "Fully Connected (NC, F32) GEMM"} <= ops, ops
    fields = module_fields(rows)
    assert fields["attributed"] == pytest.approx(1.0), rows
    placed = {(r["op"], r["module"]) for r in rows}
    assert ("Convolution (NHWC, F32) DWConv", "features.1.conv.0.0") in placed  # a stride-1 dwconv, its PAD fused
    assert ("Fully Connected (NC, F32) GEMM", "features.18.0") in placed  # the last 1x1 conv, run as a GEMM
    assert ("Fully Connected (NC, F32) GEMM", "classifier.1") in placed  # named by its weights, not the signature
    assert 0.5 * rep["median_ms"] < sum(r["ms"] for r in rows) < 1.5 * rep["median_ms"]
    model = load_model("mobilenetv2_100", num_classes=10, input_size=SMALL).model
    times = kernels_from_rows(kernels_of(model, SMALL), rows)
    heavy = [m for k, m in zip(times.kernels, times.ms) if k.kind in ("conv", "pwconv", "dwconv", "linear")]
    assert len(heavy) == 53 and all(m is not None for m in heavy)  # some at 0: the profiler counts whole us
    assert times.matched_ms > 0.9 * sum(r["ms"] for r in rows)  # what is left: the input's NCHW -> NHWC transpose


def test_litert_events_are_placed_on_the_nodes_they_run():
    """XNNPACK's events between two operators run outside the delegate (which carry their TFLite node) are lined up
    with the nodes between them: a PAD fused away, a 1x1 CONV_2D run as a Fully Connected, an inserted transpose
    (no node of its own) left unplaced."""
    from edgekit.compile.litert_profile import place

    nodes = ["TRANSPOSE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "LESS", "CAST", "MEAN",
             "FULLY_CONNECTED"]  # fmt: skip
    xnn, tfl = 8, 2
    events = [(xnn, "Transpose (ND, X32) Transpose", 0), (xnn, "Convolution (NHWC, F32) IGEMM", 1),
              (xnn, "Convolution (NHWC, F32) DWConv", 2), (xnn, "Transpose (ND, X32) Transpose", 3),
              (xnn, "Fully Connected (NC, F32) GEMM", 4), (xnn, "Add (ND)", 5), (tfl, "LESS", 6), (tfl, "CAST", 7),
              (xnn, "Mean (ND) Reduce2", 0), (xnn, "Fully Connected (NC, F32) GEMM", 1)]  # fmt: skip
    placed = place([{"type": t, "op": op, "index": i, "ms": 0.1} for t, op, i in events], nodes)
    assert placed == [0, 2, 3, None, 4, 5, 6, 7, 8, 9]


def test_litert_of_another_version_gives_no_per_op_rows(shared_compile, monkeypatch):
    """The profiler's events are read as ai-edge-litert 2.3.0 lays them out; with another version `profile` says the
    host gives no per-op timing instead of reading them at the wrong offsets, and the kernel sweep times LiteRT's
    kernels by differences again."""
    from edgekit.compile import litert_profile
    from edgekit.latency.sweep import rows_name_modules

    assert rows_name_modules("tflite")
    monkeypatch.setattr(litert_profile, "LAYOUT_VERSIONS", ("0.0.0",))
    assert not rows_name_modules("tflite") and rows_name_modules("executorch")
    result = shared_compile("mobilenetv2_100", "tflite", input_size=SMALL, num_classes=10)
    rep = profile(result.artifact, runs=2, warmup=1, threads=1, per_op=True)
    assert "ops" not in rep and any("no per-op timing" in n for n in rep["notes"])
