"""Profiling: host runtimes, the report schema, the adb parsers on recorded tool outputs, and import."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.profile import SCHEMA_ID, load_report, profile, validate_report
from edgekit.profile.adb import ParseError, parse_benchmark_model, parse_executor_runner

from .conftest import DATA, assert_user_error, run_cli

ADB = DATA / "adb"
pytestmark = pytest.mark.xdist_group("profile")


# -- parsers, on what the real tools printed (tests/data/adb/SOURCES.md says where each came from) -------


def test_benchmark_model_plain_new_format():
    r = parse_benchmark_model((ADB / "benchmark_model_plain_3.txt").read_text())
    assert r["runs"] == 70 and r["warmup_runs"] == 35
    assert r["mean_ms"] == pytest.approx(14.2909) and r["min_ms"] == pytest.approx(13.728)
    assert r["std_ms"] == pytest.approx(0.452) and r["load_ms"] == pytest.approx(52.687)
    assert r["peak_memory_mb"] == pytest.approx(34.5234)
    assert "median_ms" not in r and "ops" not in r


def test_benchmark_model_percentiles_and_scientific_notation():
    r = parse_benchmark_model((ADB / "benchmark_model_plain_4.txt").read_text())
    assert r["mean_ms"] == pytest.approx(1240.27) and r["median_ms"] == pytest.approx(1239.807)
    assert r["p95_ms"] == pytest.approx(1247.415) and r["warmup_runs"] == 1


def test_benchmark_model_old_format_without_prefix():
    r = parse_benchmark_model((ADB / "benchmark_model_plain_1.txt").read_text())
    assert r["runs"] == 50 and r["mean_ms"] == pytest.approx(220.0) and r["peak_memory_mb"] == pytest.approx(140.508)
    r2 = parse_benchmark_model((ADB / "benchmark_model_plain_2.txt").read_text())  # "Peak memory footprint" wording
    assert r2["mean_ms"] == pytest.approx(249.684) and r2["peak_memory_mb"] == pytest.approx(138.809)


def test_benchmark_model_op_profiling_summary_rows():
    r = parse_benchmark_model((ADB / "benchmark_model_op_profiling_1.txt").read_text())  # tabs, [start] column
    ops = {o["op"]: o for o in r["ops"]}
    assert list(ops)[:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert ops["CONV_2D"]["count"] == 15 and ops["CONV_2D"]["ms"] == pytest.approx(2651.853)
    assert sum(o["share"] for o in r["ops"]) == pytest.approx(1.0, abs=1e-3)
    r3 = parse_benchmark_model((ADB / "benchmark_model_op_profiling_3.txt").read_text())  # spaces, XNNPACK names
    assert r3["ops"][0]["op"] == "Convolution (NHWC, QC8) GEMM" and r3["ops"][0]["count"] == 62
    assert r3["mean_ms"] == pytest.approx(15.5176)
    only_ops = parse_benchmark_model((ADB / "benchmark_model_op_profiling_2.txt").read_text())
    assert only_ops["ops"][0]["op"] == "TfLiteNnapiDelegate" and "mean_ms" not in only_ops


def test_executor_runner_formats():
    r7 = parse_executor_runner((ADB / "executor_runner_7.txt").read_text())
    assert r7 == {"iterations_ms": [1.62], "executions": 1, "total_ms": 1.62, "load_ms": 7.85}
    r6 = parse_executor_runner((ADB / "executor_runner_6.txt").read_text())
    assert r6["executions"] == 1 and r6["total_ms"] == pytest.approx(15.013292)
    with pytest.raises(ParseError, match="prints no timing"):
        parse_executor_runner((ADB / "executor_runner_2.txt").read_text())
    with pytest.raises(ParseError, match="did not report a successful execution"):
        parse_executor_runner("E 00:00:00.1 executorch:executor_runner.cpp:99] Loading of program failed\n")
    with pytest.raises(ParseError, match="no timings"):
        parse_benchmark_model("ERROR: Could not open 'x.tflite'.\n")


# -- on this machine ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    src = out / "nets.py"
    src.write_text((DATA.parent / "conftest.py").read_text().split("src = '''")[1].split("'''")[0])
    return {t: edgekit.compile(f"{src}:TinyNet", t, input_size=32, out=out).artifact for t in ("onnx", "executorch")}


@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_profile_host_report(artifacts, target):
    r = profile(artifacts[target], runs=7, warmup=2, threads=1, per_op=True)
    assert r["schema"] == SCHEMA_ID and r["runtime"]["name"] == target and r["threads"] == 1
    assert len(r["samples_ms"]) == 7 and r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= max(r["samples_ms"])
    assert r["artifact"]["sha256"] == json.loads(Path(str(artifacts[target]) + ".json").read_text())["sha256"]
    assert r["load_ms"] > 0 and r["artifact"]["input_shape"] == [1, 3, 32, 32]
    assert r["ops"] and sum(o["share"] for o in r["ops"]) == pytest.approx(1.0, abs=1e-2)
    kinds = " ".join(o["op"] for o in r["ops"])
    assert ("Conv" in kinds) if target == "onnx" else ("Convolution" in kinds)
    validate_report(r)


def test_profile_cli_records_lists_exports_and_reports(artifacts, tmp_path):
    db = tmp_path / "lat.sqlite"
    saved = tmp_path / "r.json"
    proc = run_cli(
        "profile",
        str(artifacts["onnx"]),
        "--runs",
        "5",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--db",
        str(db),
        "--save",
        str(saved),
        "--per-op",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert load_report(saved) == report
    rows = json.loads(run_cli("latency", "list", "--db", str(db), "--json").stdout)
    assert len(rows) == 1 and rows[0]["artifact_sha256"] == report["artifact"]["sha256"]
    assert rows[0]["median_ms"] == pytest.approx(report["median_ms"]) and rows[0]["threads"] == 1
    csv_text = run_cli("latency", "export", "--db", str(db), "--format", "csv").stdout.splitlines()
    assert csv_text[0].startswith("id,created,artifact_sha256") and len(csv_text) == 2
    exported = tmp_path / "all.json"
    assert run_cli("latency", "export", str(exported), "--db", str(db)).returncode == 0
    assert json.loads(exported.read_text()) == [report]
    # the HTML report of the artifacts' folder: manifests, verification, latency, per-op bars
    page_path = tmp_path / "page.html"
    proc = run_cli("report", str(artifacts["onnx"].parent), "--db", str(db), "--out", str(page_path))
    assert proc.returncode == 0, proc.stderr
    page = page_path.read_text()
    assert "TinyNet.onnx" in page and "TinyNet.pte" in page and "passed" in page
    assert f"{report['median_ms']:.3f}" in page and "class='bar'" in page


def test_profile_import_demo_app_report(tmp_path):
    db = tmp_path / "lat.sqlite"
    proc = run_cli("profile", "import", str(DATA / "app_report_ios.json"), "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(run_cli("latency", "list", "--db", str(db), "--json").stdout)
    assert rows[0]["device"] == "iphone" and rows[0]["target"] == "coreml" and rows[0]["runs"] == 50
    broken = json.loads((DATA / "app_report_ios.json").read_text())
    broken["samples_ms"][3] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    assert_user_error(
        run_cli("profile", "import", str(tmp_path / "bad.json"), "--db", str(db)),
        "at samples_ms/3",
        "is less than the minimum",
    )
    assert_user_error(run_cli("profile", "import", str(tmp_path / "none.json")), "does not exist")


def test_profile_user_errors(artifacts, tmp_path):
    a = str(artifacts["onnx"])
    assert_user_error(run_cli("profile", str(tmp_path / "x.onnx"), "--no-db"), "does not exist")
    assert_user_error(run_cli("profile", a, "--runs", "0", "--no-db"), "--runs 0")
    assert_user_error(run_cli("profile", a, "--device", "pixel-9", "--no-db"), "no device 'pixel-9'", "host")
    assert_user_error(run_cli("profile", a, "--device", "iphone", "--no-db"), "no device 'iphone' for target onnx")
    pte = str(artifacts["executorch"])
    assert_user_error(run_cli("profile", pte, "--device", "iphone", "--no-db"), "demo app", "profile import")
    env_free = run_cli("profile", pte, "--device", "adb", "--no-db")
    assert_user_error(env_free, "executor_runner")
    assert_user_error(run_cli("report", str(tmp_path)), "holds no manifests")


def test_validate_report_names_the_field():
    report = json.loads((DATA / "app_report_ios.json").read_text())
    del report["artifact"]["sha256"]
    with pytest.raises(EdgekitError, match="at artifact: 'sha256' is a required property"):
        validate_report(report)


# -- adb, with a stand-in for the adb binary that answers as a phone running the real tools did -------------


def _fake_adb(tmp_path: Path, output_file: Path) -> Path:
    """An `adb` on PATH that logs its arguments and prints a recorded tool output for the benchmark command."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "adb.log"
    script = bindir / "adb"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$*" in
  *getprop*ro.product.model*) echo "Pixel 8";;
  *getprop*ro.build.version.release*) echo "14";;
  *benchmark_model\\ --graph*|*executor_runner\\ --model_path*) cat {output_file};;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_adb_benchmark_model_end_to_end(tmp_path, monkeypatch):
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"TFL3")
    (tmp_path / "m.tflite.json").write_text(
        json.dumps(
            {
                "target": "tflite",
                "artifact": "m.tflite",
                "sha256": hashlib.sha256(b"TFL3").hexdigest(),
                "bytes": 4,
                "options": {},
                "inputs": [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}],
                "model": {"reference": "mobilevig_ti"},
                "preprocessing": {"size": 224},
            }
        )
    )
    tool = tmp_path / "benchmark_model"
    tool.write_bytes(b"\x7fELF")
    monkeypatch.setenv(
        "PATH", f"{_fake_adb(tmp_path, ADB / 'benchmark_model_op_profiling_3.txt')}:{os.environ['PATH']}"
    )
    r = profile(tfl, device="adb:R5CX", runs=64, warmup=32, per_op=True, binary=tool)
    assert r["device"] == {"name": "android", "via": "adb", "model": "Pixel 8", "os": "Android 14", "serial": "R5CX"}
    assert r["threads"] == 4 and r["mean_ms"] == pytest.approx(15.5176) and r["samples_ms"] == []
    assert r["ops"][0]["op"] == "Convolution (NHWC, QC8) GEMM" and r["peak_memory_mb"] == pytest.approx(34.8281)
    calls = (tmp_path / "adb.log").read_text().splitlines()
    assert calls[0].startswith("-s R5CX shell mkdir -p /data/local/tmp/edgekit")
    assert any(c.startswith("-s R5CX push") and c.endswith("/data/local/tmp/edgekit/m.tflite") for c in calls)
    run = next(c for c in calls if "--graph=" in c)
    assert "--num_threads=4" in run and "--num_runs=64" in run and "--enable_op_profiling=true" in run


def test_adb_executor_runner_iterations(tmp_path, monkeypatch):
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"ET")
    (tmp_path / "m.pte.json").write_text(
        json.dumps(
            {
                "target": "executorch",
                "artifact": "m.pte",
                "sha256": hashlib.sha256(b"ET").hexdigest(),
                "bytes": 2,
                "options": {"delegate": "xnnpack"},
                "inputs": [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}],
                "model": {"reference": None},
                "preprocessing": {"size": 224},
            }
        )
    )
    tool = tmp_path / "executor_runner"
    tool.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", f"{_fake_adb(tmp_path, ADB / 'executor_runner_7.txt')}:{os.environ['PATH']}")
    monkeypatch.setenv("EDGEKIT_EXECUTOR_RUNNER", str(tool))
    r = profile(pte, device="adb", runs=1, warmup=0, threads=2)
    assert r["samples_ms"] == [1.62] and r["median_ms"] == 1.62 and r["load_ms"] == 7.85
    run = next(c for c in (tmp_path / "adb.log").read_text().splitlines() if "--model_path=" in c)
    assert "--num_executions=1" in run and "--cpu_threads=2" in run
