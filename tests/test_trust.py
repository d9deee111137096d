"""Trust: a checkpoint is data, bad values are one line, faults lose nothing, the same command gives the same bytes.

The bad-input matrix: each case is a command a careless user or an attacker could type, run as the CLI runs it,
and must end with exit code 2 (130 for Ctrl-C), one `error:` line, no traceback, nothing left in its output
folder and no marker from a payload.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import edgekit
from edgekit import recipe as recipes
from edgekit.models import load_model, save_checkpoint, trusted_code

from .conftest import CLI_ENV, assert_user_error, run_cli

# A model file whose import and constructor leave a marker: if the marker exists, its code ran.
PAYLOAD = """
import os
from pathlib import Path

import torch
from torch import nn

Path(os.environ["EDGEKIT_TEST_MARKER"]).write_text("module body ran")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        Path(os.environ["EDGEKIT_TEST_MARKER"]).write_text("constructor ran")
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class Interrupted(nn.Module):
    '''Ctrl-C arriving while the model is built: the same KeyboardInterrupt, at a known moment.'''

    def __init__(self):
        super().__init__()
        raise KeyboardInterrupt
"""


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """(model file, marker path): the marker appears only if the file's code runs."""
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EDGEKIT_TEST_MARKER", str(marker))
    path = tmp_path / "payload.py"
    path.write_text(PAYLOAD)
    return path, marker


def _checkpoint(path: Path, base: str, **fields) -> Path:
    """An edgekit checkpoint as an attacker would write one: plain data that names `base` as its model."""
    blob = {"format": "edgekit-checkpoint/1", "base": base, "num_classes": 10, "input_size": 32, "plans": []}
    blob.update(fields)
    blob.setdefault("state_dict", {"w": torch.zeros(1)})
    torch.save(blob, path)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# -- a checkpoint runs no code ---------------------------------------------------------------------------------

CHECKPOINT_COMMANDS = {
    "compile": lambda ck, out: ["compile", ck, "--target", "onnx", "--out", out],
    "prune": lambda ck, out: ["prune", ck, "--method", "magnitude", "--ratio", "0.5", "--out", f"{out}/p.pt"],
    "train": lambda ck, out: ["train", ck, "--epochs", "1", "--limit", "32", "--out", f"{out}/t.pt"],
    "distill-student": lambda ck, out: ["distill", ck, "--teacher", "mobilenetv2_100", "--out", f"{out}/d.pt"],
    "distill-teacher": lambda ck, out: ["distill", "mobilenetv2_100", "--teacher", ck, "--out", f"{out}/d.pt"],
    "latency-predict": lambda ck, out: ["latency", "predict", ck, "--target", "onnx", "--device", "host"],
    "zoo-info": lambda ck, out: ["zoo", "info", ck],
}


@pytest.mark.timeout(60)  # the teacher was refused only after ~48 s of set-up
@pytest.mark.parametrize("command", CHECKPOINT_COMMANDS)
@pytest.mark.parametrize("base", ["file", "module"])
def test_a_checkpoint_that_names_code_is_refused_before_the_code_runs(tmp_path, payload, command, base):
    model_file, marker = payload
    ref = f"{model_file}:Net" if base == "file" else "tempfile:mkdtemp"
    ck = _checkpoint(tmp_path / "evil.pt", ref)
    out = tmp_path / "out"
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).iterdir()) if base == "module" else set()
    proc = run_cli(*CHECKPOINT_COMMANDS[command](str(ck), str(out)))
    assert_user_error(proc, "evil.pt", "names Python code", ref, "--trust-code")
    assert not marker.exists(), marker.read_text()
    assert _files(out) == []
    if base == "module":  # tempfile.mkdtemp was not called
        made = set(Path(os.environ.get("TMPDIR", "/tmp")).iterdir()) - before
        assert not [p for p in made if p.name.startswith("tmp") and p.is_dir() and not any(p.iterdir())]


def test_trust_code_is_the_opt_in_and_a_typed_reference_runs(tmp_path, payload):
    model_file, marker = payload
    ref = f"{model_file}:Net"
    # what edgekit itself writes from a user's module: the base is the user's reference (in a context of its own:
    # a reference built here is trusted for the rest of its context)
    contextvars.copy_context().run(lambda: save_checkpoint(load_model(ref, input_size=32), tmp_path / "mine.pt"))
    assert marker.exists()  # the user typed the reference: their file ran, as documented
    marker.unlink()
    assert_user_error(run_cli("zoo", "info", str(tmp_path / "mine.pt")), "--trust-code")
    assert not marker.exists()
    proc = run_cli("zoo", "info", str(tmp_path / "mine.pt"), "--trust-code")
    assert proc.returncode == 0, proc.stderr
    assert marker.exists() and "payload.py:Net" in proc.stdout
    marker.unlink()
    with trusted_code([ref]):  # the Python API: trust exactly this reference
        assert load_model(str(tmp_path / "mine.pt")).model.fc.out_features == 10
    assert marker.exists()
    marker.unlink()

    def in_a_session():  # a Python session that built the module itself may load checkpoints that name it
        with pytest.raises(edgekit.EdgekitError, match="--trust-code"):
            load_model(str(tmp_path / "mine.pt"))
        load_model(ref)
        return load_model(str(tmp_path / "mine.pt")).model.fc.out_features

    assert contextvars.copy_context().run(in_a_session) == 10
    marker.unlink()
    # --trust-code ends with its command: the next command in the same process is refused again
    assert_user_error(run_cli("zoo", "info", str(tmp_path / "mine.pt")), "--trust-code")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"base": "ignored.pt"}, "is not a zoo model"),  # a checkpoint does not chain to files
        ({"base": ["mobilenetv2_100"]}, "'base' should be a model reference"),
        ({"num_classes": 0}, "'num_classes' should be a whole number from 1"),
        ({"num_classes": 10**30}, "'num_classes' should be a whole number from 1"),
        ({"input_size": -3}, "'input_size' should be a whole number from 8"),
        ({"plans": "x"}, "'plans' should be a list"),
    ],
    ids=["chained", "base-list", "classes-0", "classes-huge", "size-negative", "plans-str"],
)
def test_a_damaged_checkpoint_is_one_line(tmp_path, fields, needle):
    ck = _checkpoint(tmp_path / "bad.pt", **{"base": "mobilenetv2_100", **fields})
    if fields.get("base") == "ignored.pt":
        _checkpoint(tmp_path / "ignored.pt", "mobilenetv2_100")
    assert_user_error(run_cli("compile", str(ck), "--target", "onnx", "--out", str(tmp_path / "o")), needle)
    assert _files(tmp_path / "o") == []


# -- values out of range ---------------------------------------------------------------------------------------

BAD_VALUES = {
    "input-size-huge": (
        ["compile", "mobilenetv2_100", "--target", "onnx", "--input-size", "100000"],
        "--input-size 100000",
    ),
    "input-size-5000": (["compile", "mobilenetv2_100", "--target", "onnx", "--input-size", "5000"], "from 8 to 2048"),
    "input-size-0": (
        ["prune", "mobilenetv2_100", "--method", "magnitude", "--ratio", "0.5", "--input-size", "0"],
        "--input-size 0 is out of range",
    ),
    "classes-0": (
        ["compile", "mobilenetv2_100", "--target", "onnx", "--num-classes", "0"],
        "--num-classes 0 is out of range",
    ),
    "classes-negative": (["compile", "mobilenetv2_100", "--target", "onnx", "--num-classes", "-3"], "--num-classes -3"),
    "threads-9999": (
        ["latency", "predict", "mobilenetv2_100", "--target", "onnx", "--threads", "9999"],
        "--threads 9999",
    ),
    "select-budget-nan": (["select", "--target", "onnx", "--device", "host", "--budget-ms", "nan"], "--budget-ms nan"),
    "select-budget-inf": (["select", "--target", "onnx", "--device", "host", "--budget-ms", "inf"], "--budget-ms inf"),
    "prune-budget-nan": (["prune", "mobilenetv2_100", "--budget-ms", "nan", "--target", "onnx"], "--budget-ms nan"),
}


@pytest.mark.timeout(60)  # each was a hang, a 120 GB allocation or two minutes of calibration
@pytest.mark.parametrize("case", BAD_VALUES)
def test_values_out_of_range_are_one_line(tmp_path, case):
    args, needle = BAD_VALUES[case]
    out = tmp_path / "out"
    out_arg = ["--out", str(out / "p.pt")] if args[0] == "prune" else ["--out", str(out)]
    proc = run_cli(*args, *(out_arg if args[0] in ("compile", "prune", "select") else []))
    assert_user_error(proc, needle)
    assert _files(out) == []


# -- faults: an output that cannot be written, a full disk, Ctrl-C, a killed writer ------------------------------

UNWRITABLE = {
    "compile": lambda o: ["compile", "mobilenetv2_100", "--target", "onnx", "--input-size", "32", "--out", f"{o}/c"],
    "prune": lambda o: ["prune", "mobilenetv2_100", "--method", "magnitude", "--ratio", "0.5", "--out", f"{o}/p.pt"],
    "train": lambda o: ["train", "mobilenetv2_100", "--epochs", "1", "--out", f"{o}/t.pt"],
    "latency-export": lambda o: ["latency", "export", "--format", "json", f"{o}/e.json"],
}


@pytest.mark.parametrize("command", UNWRITABLE)
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder must be")
    proc = run_cli(*UNWRITABLE[command](blocker))
    assert_user_error(proc, "could not write", str(blocker), "a file is in the way")
    assert blocker.read_text() == "a file where a folder must be"


def test_run_into_an_unwritable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: mobilenetv2_100\ncompile: [onnx]\n")
    assert_user_error(run_cli("run", str(recipe), "--out", str(blocker / "run")), "could not write", str(blocker))


def _limit_file_size() -> None:  # in the child: every write past 1 MB fails with EFBIG, as a full disk does
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["compile", "prune"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, command):
    out = tmp_path / "out"
    args = {  # mobilenetv2_100's checkpoint and artifact are both over 1 MB
        "compile": ["compile", "mobilenetv2_100", "--target", "onnx", "--input-size", "32", "--out", str(out)],
        "prune": ["prune", "mobilenetv2_100", "--method", "magnitude", "--ratio", "0.3", "--out", str(out / "p.pt")],
    }[command]
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, **CLI_ENV),
        preexec_fn=_limit_file_size,
        timeout=110,
    )
    assert_user_error(proc, "could not write", "File too large")
    assert [f for f in _files(out) if (out / f).is_file()] == []


def test_ctrl_c_says_what_stopped_and_leaves_nothing(tmp_path, payload):
    model_file, _ = payload
    out = tmp_path / "out"
    proc = run_cli("compile", f"{model_file}:Interrupted", "--target", "onnx", "--out", str(out))
    assert proc.returncode == 130
    assert "interrupted: edgekit compile stopped" in proc.stderr and "nothing half-written" in proc.stderr
    assert "Traceback" not in proc.stderr and _files(out) == []
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: {model_file}:Interrupted\ncompile: [onnx]\n")
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    assert proc.returncode == 130 and "interrupted: edgekit run stopped" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_killed_writers_partial_file_is_cleared_by_the_next_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".p.pt.partial-{int(dead.stdout)}-abc123.pt"  # what SIGKILL mid-write leaves
    stale.write_bytes(b"x" * 1000)
    live = out / f".p.pt.partial-{os.getpid()}-def456.pt"  # a writer still running: not ours to remove
    live.write_bytes(b"y")
    other = out / f".q.pt.partial-{int(dead.stdout)}-abc123.pt"  # another file's partial: left alone
    other.write_bytes(b"z")
    proc = run_cli("prune", "mobilenetv2_100", "--method", "magnitude", "--ratio", "0.3", "--out", str(out / "p.pt"))
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and live.exists() and other.exists() and (out / "p.pt").is_file()


# -- determinism: the same command, the same bytes ----------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args",
    [
        ["train", "mobilenetv2_100", "--epochs", "1", "--limit", "64", "--input-size", "32"],
        ["prune", "mobilenetv2_100", "--method", "magnitude", "--ratio", "0.3", "--structured", "--input-size", "32"],
        [
            "prune",
            "mobilenetv2_100",
            "--method",
            "dimap",
            "--ratio",
            "0.3",
            "--input-size",
            "32",
            "--num-classes",
            "10",
        ],
    ],
    ids=["train", "prune-magnitude", "prune-dimap"],
)
def test_the_same_command_writes_the_same_checkpoint(tmp_path, args):
    shas = []
    for i in range(2):
        out = tmp_path / f"run{i}" / "model.pt"
        proc = run_cli(*args, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        shas.append(_sha(out))
    assert shas[0] == shas[1]


def test_the_same_recipe_twice_gives_the_same_bytes_and_cache_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_DB", str(tmp_path / "latency.sqlite"))
    (tmp_path / "net.py").write_text(PAYLOAD)
    monkeypatch.setenv("EDGEKIT_TEST_MARKER", str(tmp_path / "marker"))
    recipe = {
        "name": "twice",
        "model": {"ref": f"{tmp_path / 'net.py'}:Net", "input_size": 16},  # a user's module: trusted in its recipe
        "data": "digits",
        "train": {"epochs": 1, "batch_size": 32, "limit": 128},
        "prune": {"method": "magnitude", "ratio": 0.5, "structured": True},
        "compile": ["onnx"],
    }
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    runs = [recipes.run(path, tmp_path / f"out{i}") for i in range(2)]
    keys = [[(s["name"], s["key"]) for s in r.manifest["steps"]] for r in runs]
    assert keys[0] == keys[1] and [s["status"] for s in runs[1].manifest["steps"]] == ["ran"] * 3
    digests = [{a["path"]: a["sha256"] for a in r.manifest["artifacts"] if a["kind"] == "checkpoint"} for r in runs]
    assert digests[0] == digests[1] and digests[0]


def test_verify_runs_no_code_a_manifest_names(tmp_path, payload):
    model_file, marker = payload
    ref = f"{model_file}:Net"
    proc = run_cli("compile", ref, "--target", "onnx", "--input-size", "16", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    artifact = tmp_path / "out" / "Net.onnx"
    marker.unlink()
    assert_user_error(run_cli("verify", str(artifact)), "manifest", "names Python code", "--trust-code")
    assert not marker.exists()
    for extra in (["--model", ref], ["--trust-code"]):  # the user names the code, or trusts the manifest's
        proc = run_cli("verify", str(artifact), *extra)
        assert proc.returncode == 0 and "passed" in proc.stdout, proc.stderr
