"""Files edgekit reads but did not write this run: latency reports, manifests, compiled artifacts, the latency
database. Whatever they hold, a command ends with one line on stderr and exit code 2, writes nothing, and
finishes (no input makes it hang)."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import pytest

import edgekit
from edgekit.latency import LatencyDB

from .conftest import DATA, run_cli, run_cli_process

pytestmark = pytest.mark.xdist_group("trust_reports")  # one worker compiles the tiny artifacts once

REPORT = DATA / "app_report_ios.json"
NETS = (DATA.parent / "conftest.py").read_text().split("src = '''")[1].split("'''")[0]  # TinyNet and friends
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte"}


def assert_refused(proc, *needles: str) -> None:
    """Exit 2, at most 3 lines on stderr with the needles in them, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def db_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]


def edited(doc: dict, changes: dict) -> dict:
    """`doc` with each `a__b__c` key path set to its value (or deleted, for DELETE), in place."""
    for path, value in changes.items():
        *outer, last = path.split("__")
        d = doc
        for k in outer:
            d = d[k]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return doc


def report(**changes) -> dict:
    return edited(json.loads(REPORT.read_text()), changes)


DELETE = object()


def noise(n: int) -> bytes:
    """Random bytes, the same each run (a damaged file that happened to parse would make a flaky test)."""
    return random.Random(n).randbytes(n)


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


# -- latency reports: `edgekit profile import REPORT.json` --------------------------------------------------

BAD_REPORTS = [
    # (id, the file's text, what the one line says)
    ("1MB-device-name", json.dumps(report(device__name="a" * 1_000_000)), "at device/name: 1000000 characters"),
    (
        "1MB-note",
        json.dumps(report(notes=["n" * 1_000_000])),
        "at notes/0: 1000000 characters, more than the 1000 allowed",
    ),
    ("100KB-model", json.dumps(report(artifact__model="m" * 100_000)), "at artifact/model: 100000 characters"),
    ("100KB-sha256", json.dumps(report(artifact__sha256="f" * 100_000)), "does not match"),
    ("5MB-file", json.dumps(report()) + " " * (5 * 2**20), "larger than 4 MB"),
    ("100000-deep", nested(100_000), "nested too deeply"),
    ("50-deep-extra-key", json.dumps(report(extra=json.loads(nested(50)))), "nested more than 16 deep"),
    ("threads-1e30", json.dumps(report(threads=10**30)), "at threads: 1000000000000000000000000000000 is greater"),
    ("runs-1e30", json.dumps(report(runs=10**30)), "at runs:"),
    ("median-NaN", json.dumps(report(median_ms=float("nan"))), "NaN"),
    ("sample-Infinity", json.dumps(report(samples_ms=[float("inf")] * 50)), "Infinity"),
    ("mean-1e999", json.dumps(report(mean_ms=1234.5)).replace("1234.5", "1e999"), "1e999"),
    ("median-outside-samples", json.dumps(report(median_ms=99.0)), "median_ms 99.0 is outside the samples' range"),
    ("min-above-median", json.dumps(report(samples_ms=[], min_ms=5.0, median_ms=1.0)), "min_ms 5.0 is above"),
    ("runs-not-sample-count", json.dumps(report(runs=7)), "runs is 7 but samples_ms holds 50 samples"),
    ("samples-without-min", json.dumps(report(min_ms=DELETE)), "min_ms is missing"),
    ("negative-sample", json.dumps(report(samples_ms=[-1.0] * 50)), "at samples_ms/"),
    ("list", "[1, 2, 3]", "not a JSON object"),
    ("not-utf8", '{"schema": "\xff"}', "not UTF-8"),
    ("not-json", "{'schema': 1}", "not valid JSON"),
]


@pytest.mark.timeout(60)  # a 100 KB string took 86 s, 1 MB never finished (rich's highlighter on the note)
@pytest.mark.parametrize("text,needle", [pytest.param(t, n, id=i) for i, t, n in BAD_REPORTS])
def test_bad_report_is_refused_before_the_database(tmp_path, text, needle):
    db = tmp_path / "lat.sqlite"
    with LatencyDB(db) as database:  # a database with one report in it already
        database.add(report())
    src = tmp_path / "report.json"
    src.write_bytes(text.encode("latin-1"))  # every text above is ASCII but the not-UTF-8 one
    before = files_in(tmp_path)
    assert_refused(run_cli("profile", "import", str(src), "--db", str(db)), f"report '{src}'", needle)
    assert db_rows(db) == 1  # nothing recorded
    assert files_in(tmp_path) == before


def test_report_naming_python_code_is_recorded_without_running_it(tmp_path):
    """Importing someone's report must not import the Python file its `artifact.model` names."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    src = tmp_path / "report.json"
    src.write_text(json.dumps(report(artifact__model=f"{tmp_path / 'evil.py'}:Net")))
    db = tmp_path / "lat.sqlite"
    proc = run_cli("profile", "import", str(src), "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    (too_long := tmp_path / "long.json").write_text(json.dumps(report(artifact__model="m" * 600)))  # no path is
    assert run_cli("profile", "import", str(too_long), "--db", str(db), "--json").returncode == 0
    assert db_rows(db) == 2


def test_export_is_valid_json_whatever_the_database_holds(tmp_path):
    """A NaN stored by an older edgekit is exported as null, never as the invalid JSON token NaN."""
    db = tmp_path / "lat.sqlite"
    with LatencyDB(db) as database:
        database.add(report())
    stored = json.dumps(report(median_ms=float("nan"), samples_ms=[float("inf")] * 50))  # as json.dumps wrote it
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE reports SET report = ?", (stored,))
    proc = run_cli("latency", "export", "--db", str(db), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"{c} in the export"))
    assert exported[0]["median_ms"] is None and exported[0]["samples_ms"][0] is None


# -- manifests: `edgekit verify` / `edgekit profile` of an artifact whose manifest is not what compile wrote ---


def fake_artifact(folder: Path, manifest_changes: dict | None = None, text: str | None = None) -> Path:
    """An artifact (bytes that are no model) with a manifest as compile writes it, changed as given."""
    folder.mkdir(parents=True, exist_ok=True)
    artifact = folder / "net.onnx"
    artifact.write_bytes(b"not a model")
    manifest = {
        "target": "onnx",
        "artifact": artifact.name,
        "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "bytes": artifact.stat().st_size,
        "model": {"reference": "mobileone_s0", "name": "mobileone_s0", "num_classes": 10},
        "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
        "preprocessing": {"size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "options": {},
    }
    edited(manifest, manifest_changes or {})
    mpath = folder / "net.onnx.json"
    if text is not None:
        mpath.write_bytes(text.encode("latin-1"))
    else:
        mpath.write_text(json.dumps(manifest))
    return artifact


BAD_MANIFESTS = [
    ("list", None, "[]", "is not a JSON object but a list"),
    ("string", None, '"onnx"', "is not a JSON object but a str"),
    ("not-json", None, "{", "is not valid JSON"),
    ("not-utf8", None, "{\xff}", "not UTF-8"),
    ("deep", None, "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("no-model", {"model": DELETE}, None, "model: Field required"),
    ("model-string", {"model": "mobileone_s0"}, None, "model: Input should be an object"),
    ("no-target", {"target": DELETE}, None, "target: Field required"),
    ("target-number", {"target": 3}, None, "target: Input should be a valid string"),
    ("size-negative", {"preprocessing__size": -3}, None, "preprocessing.size: Input should be greater than"),
    ("size-huge", {"preprocessing__size": 10**9}, None, "preprocessing.size: Input should be less than"),
    ("size-string", {"preprocessing__size": "32"}, None, "preprocessing.size: Input should be a valid integer"),
    ("size-float", {"preprocessing__size": 32.0}, None, "preprocessing.size: Input should be a valid integer"),
    ("mean-string", {"preprocessing__mean": "abc"}, None, "preprocessing.mean"),
    ("mean-two-values", {"preprocessing__mean": [0.5, 0.5]}, None, "mean should give 1 or 3 values"),
    ("std-zero", {"preprocessing__std": [0.0, 1.0, 1.0]}, None, "preprocessing.std.0"),
    ("no-preprocessing", {"preprocessing": DELETE}, None, "preprocessing: Field required"),
    ("inputs-empty", {"inputs": []}, None, "inputs: List should have at least 1 item"),
    ("shape-missing", {"inputs": [{"name": "input"}]}, None, "inputs.0.shape: Field required"),
    ("num-classes-zero", {"model__num_classes": 0}, None, "model.num_classes"),
    ("sha256-short", {"sha256": "abc"}, None, "sha256: String should match pattern"),
    ("bytes-negative", {"bytes": -1}, None, "bytes: Input should be greater than or equal to 0"),
    ("quantization-list", {"quantization": ["int8"]}, None, "quantization: Input should be an object"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["verify", "profile"])
@pytest.mark.parametrize("changes,text,needle", [pytest.param(c, t, n, id=i) for i, c, t, n in BAD_MANIFESTS])
def test_bad_manifest_names_the_field(tmp_path, command, changes, text, needle):
    artifact = fake_artifact(tmp_path / "art", changes, text)
    before = files_in(tmp_path)
    extra = ["--no-db", "--save", str(tmp_path / "art" / "report.json")] if command == "profile" else []
    assert_refused(run_cli(command, str(artifact), *extra), "net.onnx.json", needle)
    assert files_in(tmp_path) == before


# -- damaged artifacts: random bytes, or a real artifact cut short ---------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """TinyNet at 16x16 compiled (without verification) for a target, once per target the tests ask for."""
    root = tmp_path_factory.mktemp("tiny")
    nets = root / "nets.py"
    nets.write_text(NETS)
    built: dict[str, Path] = {}

    def get(target: str) -> Path:
        if target not in built:
            r = edgekit.compile(f"{nets}:TinyNet", target, input_size=16, out=root / target, verify=False)
            built[target] = r.artifact
        return built[target]

    get.nets = nets  # type: ignore[attr-defined]
    return get


def damaged_copy(tiny, target: str, kind: str, dest: Path, keep_manifest_sha: bool = False) -> Path:
    """A copy of the tiny artifact, damaged; its manifest's sha256 updated to match (so the loader sees it)."""
    src = tiny(target)
    dest.mkdir(parents=True, exist_ok=True)
    artifact = dest / src.name
    data = src.read_bytes()
    artifact.write_bytes(noise(len(data)) if kind == "random" else data[: len(data) // 2])
    manifest = json.loads(Path(f"{src}.json").read_text())
    if not keep_manifest_sha:
        manifest.update(sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(), bytes=artifact.stat().st_size)
    Path(f"{artifact}.json").write_text(json.dumps(manifest))
    return artifact


RUNTIMES = {"onnx": "ONNX Runtime", "tflite": "LiteRT", "executorch": "ExecuTorch"}


@pytest.mark.timeout(60)  # random bytes used to abort the process inside ExecuTorch's loader
@pytest.mark.parametrize("command", ["verify", "profile"])
@pytest.mark.parametrize("kind", ["random", "truncated"])
@pytest.mark.parametrize("target", list(RUNTIMES))
def test_damaged_artifact_is_one_line(tiny, tmp_path, target, kind, command):
    artifact = damaged_copy(tiny, target, kind, tmp_path / "art")
    before = files_in(tmp_path)
    if command == "verify":
        proc = run_cli("verify", str(artifact), "--model", f"{tiny.nets}:TinyNet", "--samples", "1")
    else:
        proc = run_cli(
            "profile", str(artifact), "--no-db", "--runs", "2", "--warmup", "0", "--save", str(tmp_path / "r.json")
        )
    assert_refused(proc, f"could not load '{artifact}' with {RUNTIMES[target]}", "compile it again")
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("command", ["verify", "profile"])
def test_changed_artifact_is_refused_before_it_runs(tiny, tmp_path, command):
    """`profile` checks the manifest's sha256 as `verify` does: a file changed after compiling is never run."""
    artifact = damaged_copy(tiny, "onnx", "truncated", tmp_path / "art", keep_manifest_sha=True)
    before = files_in(tmp_path)
    args = (
        ["--model", f"{tiny.nets}:TinyNet"] if command == "verify" else ["--no-db", "--save", str(tmp_path / "r.json")]
    )
    assert_refused(run_cli(command, str(artifact), *args), "does not match the sha256 in its manifest")
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("option", ["--runs", "--warmup"])
def test_more_runs_than_a_report_holds_are_refused_before_measuring(tiny, tmp_path, option):
    """A report holds at most 100 000 samples: asking for more fails at once, not after hours of measuring."""
    proc = run_cli("profile", str(tiny("onnx")), option, str(10**6), "--no-db", "--save", str(tmp_path / "r.json"))
    assert_refused(proc, f"{option} 1000000")
    assert not (tmp_path / "r.json").exists()


# -- a damaged latency database ----------------------------------------------------------------------------


def damaged_db(path: Path, kind: str) -> Path:
    if kind == "random":
        path.write_bytes(noise(16384))
    else:  # a real database whose pages after the first are overwritten: SQLite's header still reads
        with LatencyDB(path) as database:
            for _ in range(3):
                database.add(report())
        data = bytearray(path.read_bytes())
        data[4096:] = noise(len(data) - 4096)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("via", ["--db", "EDGEKIT_DB"])
@pytest.mark.parametrize(
    "args",
    [["latency", "list"], ["latency", "export"], ["profile", "import", str(REPORT)]],
    ids=["list", "export", "import"],
)
@pytest.mark.parametrize("kind", ["random", "pages"])
def test_damaged_database_is_one_line(tmp_path, monkeypatch, kind, args, via):
    db = damaged_db(tmp_path / "lat.sqlite", kind)
    data = db.read_bytes()
    if via == "--db":
        args = [*args, "--db", str(db)]
    else:
        monkeypatch.setenv("EDGEKIT_DB", str(db))
    before = files_in(tmp_path)
    assert_refused(run_cli(*args), f"latency database '{db}' is damaged", f"mv {db} {db}.bad")
    assert db.read_bytes() == data and files_in(tmp_path) == before


def test_profile_keeps_the_measurement_when_the_database_is_damaged(tiny, tmp_path):
    db = damaged_db(tmp_path / "lat.sqlite", "random")
    saved = tmp_path / "r.json"
    proc = run_cli("profile", str(tiny("onnx")), "--runs", "2", "--warmup", "0", "--db", str(db), "--save", str(saved))
    assert_refused(proc, f"latency database '{db}' is damaged")
    assert json.loads(saved.read_text())["runs"] == 2  # written before the database was touched


# -- measuring on this host --------------------------------------------------------------------------------


def test_peak_memory_is_never_negative(tiny, monkeypatch):
    """The resident set read before the peak is reset can exceed the peak after it: the difference is clamped."""
    import edgekit.profile as prof

    readings = {"VmRSS": 500_000, "VmHWM": 400_000}  # kB: what a process that freed memory before loading sees
    monkeypatch.setattr(prof, "_status_kb", lambda field: readings[field])
    monkeypatch.setattr(prof, "_reset_peak", lambda: True)
    r = prof.profile(tiny("onnx"), runs=2, warmup=0, threads=1)
    assert r["peak_memory_mb"] == 0


def test_onnx_runtime_writes_no_telemetry(tiny, tmp_path, monkeypatch):
    """ONNX Runtime keeps a device id and an event database under ~/.cache/Microsoft unless told not to."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY", raising=False)  # edgekit sets it in this process: not inherited
    proc = run_cli_process("verify", str(tiny("onnx")), "--model", f"{tiny.nets}:TinyNet", "--samples", "1")
    assert proc.returncode == 0, proc.stderr
    assert not (home / ".cache" / "Microsoft").exists(), sorted(files_in(home))
