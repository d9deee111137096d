from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official_state_dicts"


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        # xdist workers share the machine's cores: a worker that also runs torch on every core makes its OpenMP
        # threads wait for each other's (spinning while the other worker holds the core); one core's share each
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup`'s grouping where pytest-xdist's own no longer takes effect.

    xdist puts the tests of one `xdist_group` on one worker by adding `@group` to their node ids, with
    `item._nodeid = ...`; pytest 9.2 derives node ids from a structured `item._id`, so that assignment is lost and
    every group is silently ignored (pytest-xdist#1386): tests sharing a session fixture then build it on each worker.
    Here the same suffix goes on `item._id`. Nothing is done where xdist's suffix is already there.
    """
    if not getattr(config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})
        nodeid = item.nodeid
        if not names or nodeid.rfind("@") > nodeid.rfind("]"):
            continue
        grouped = f"{nodeid}@{'_'.join(names)}"
        structured = getattr(item, "_id", None)
        if structured is None or isinstance(structured, str):
            item._nodeid = grouped
        else:  # pytest >= 9.2: the same path, names and parameters, spelled with the group
            structured = dataclasses.replace(structured)
            object.__setattr__(structured, "_str_cache", grouped)
            item._id = structured


def official_keys(name: str) -> dict:
    return json.loads((OFFICIAL / f"{name}.json").read_text())


def official_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the official names and shapes and random values, as a published checkpoint has."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_keys(name)["keys"].items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif "layer_scale" in key:
            sd[key] = torch.rand(shape, generator=g) * 0.5 + 0.1
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    return sd


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and layer scales, so numeric checks see every branch."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for name, p in model.named_parameters():
        if "layer_scale" in name:
            p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
    return model.eval()


CLI_ENV = {"COLUMNS": "200"}  # rich wraps at the terminal's width: wide enough that no line a test reads wraps


def randomized_compiles(root: Path, target: str, size: int, **options):
    """`get(name, **more)` -> (model, compile result): the zoo model `name` (10 classes, random BatchNorm statistics
    and layer scales) compiled for `target` at `size` once per distinct call, in its own folder under `root`."""
    import edgekit

    cache: dict = {}

    def get(name: str, **more):
        key = (name, *sorted(more.items()))
        if key not in cache:
            model = randomize(edgekit.create_model(name, num_classes=10))
            out = root / "-".join([name, *map(str, more.values())])
            cache[key] = model, edgekit.compile(model, target, out=out, input_size=size, name=name, **options, **more)
        return cache[key]

    return get


def zoo_input(size: int, seed: int = 1) -> torch.Tensor:
    """A seeded random input of the zoo's shape (1, 3, size, size)."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def leaves(outputs: dict) -> list[str]:
    """The module paths among `outputs` with no other path inside them."""
    return [k for k in outputs if not any(j.startswith(k + ".") for j in outputs)]


def leaves_without_value(model: nn.Module, ref: dict, has: dict) -> set[str]:
    """Leaf modules an artifact cannot have a value of: no-ops in evaluation (Dropout, Identity) and convolutions
    whose BatchNorm the converter folded into them (the fused node or op is the BatchNorm's, in `has`)."""
    mods = dict(model.named_modules())
    order = leaves(ref)
    out = set()
    for i, k in enumerate(order):
        if isinstance(mods[k], (nn.Dropout, nn.Identity)):
            out.add(k)
        elif isinstance(mods[k], nn.Conv2d) and i + 1 < len(order):
            nxt = order[i + 1]
            if isinstance(mods[nxt], nn.BatchNorm2d) and nxt in has:
                out.add(k)
    return out


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`edgekit ARGS` in this process, through `edgekit.cli.main()` (the entry point), as the process would end.

    What it writes to file descriptors 1 and 2 (rich's consoles, converters' C++ logs) is captured, SystemExit
    becomes the return code, and an exception `main()` lets through is a traceback on stderr and exit code 1.
    sys.argv, the working directory, the environment and the consoles' width are restored afterwards. Tests of the
    process itself (the installed entry point, `python -m edgekit`, signals) use `run_cli_process`.
    """
    from edgekit import cli

    argv = ["edgekit", *map(str, args)]
    saved_argv, saved_cwd, saved_streams = sys.argv, os.getcwd(), (sys.stdout, sys.stderr)
    saved_env = {k: os.environ.get(k) for k in CLI_ENV}
    saved_widths = [(c, getattr(c, "_width", None)) for c in (cli.out, cli.err)]
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fds = (os.dup(1), os.dup(2))
        os.dup2(out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        streams = [
            io.TextIOWrapper(open(os.dup(fd), "wb"), encoding="utf-8", errors="replace", write_through=True)
            for fd in (1, 2)
        ]
        sys.stdout, sys.stderr = streams
        try:
            os.environ.update(CLI_ENV)
            for console, _ in saved_widths:
                console.width = int(CLI_ENV["COLUMNS"])  # a Console made while another COLUMNS was set keeps it
            sys.argv = argv
            if cwd is not None:
                os.chdir(cwd)
            try:
                cli.main()
                code = 0
            except SystemExit as e:
                code = _exit_code(e.code)
            except BaseException:  # what the interpreter does with an exception nothing caught
                traceback.print_exc()
                code = 1
        finally:
            for s in streams:
                s.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            for s in streams:
                s.close()
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            for console, width in saved_widths:
                console.width = width
        out_file.seek(0)
        err_file.seek(0)
        stdout, stderr = (f.read().decode("utf-8", errors="replace") for f in (out_file, err_file))
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


def _exit_code(code) -> int:
    """SystemExit's code as the process's exit status (a message is printed to stderr and gives 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m edgekit.cli` as a process, as a user would: for tests of the process itself."""
    env = dict(os.environ, **CLI_ENV)
    return subprocess.run(
        [sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
    )


@pytest.fixture(scope="session")
def shared_compile(tmp_path_factory):
    """`edgekit.compile(model, target, **options)`, compiled once per session for each distinct call.

    For tests that compile the same model for the same target with the same options and only read the result:
    they share one artifact (in its own folder, never a test's tmp_path). Session fixtures are per xdist worker,
    so mark the tests that share a call with the same `@pytest.mark.xdist_group`. A test that changes the
    artifact's files works on `copied(result, tmp_path)`.
    """
    import edgekit

    root = tmp_path_factory.mktemp("shared_compile")
    cache: dict = {}

    def get(model: str, target: str, **options):
        key = (str(model), target, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in cache:
            cache[key] = edgekit.compile(model, target, out=root / f"{len(cache)}-{target}", **options)
        return cache[key]

    return get


def copied(result, dest: Path):
    """A compile result's folder (artifact and manifest) copied to `dest`, with the result's paths moved there."""
    src = result.artifact.parent
    shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True)
    return dataclasses.replace(
        result,
        artifact=dest / result.artifact.relative_to(src),
        manifest_path=dest / result.manifest_path.relative_to(src),
    )


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, one line on stderr naming what went wrong, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def user_model_file(tmp_path: Path) -> Path:
    """A network written the way users write theirs, in its own file."""
    src = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.Hardswish(),
            nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.mean((2, 3)))


class ErfinvHead(nn.Module):
    def forward(self, x):
        return torch.erfinv(torch.tanh(x)).flatten(1)


class UsesErfinv(nn.Module):
    """erfinv has no lowering on any edgekit target; it sits in the module `head`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = ErfinvHead()

    def forward(self, x):
        return self.head(self.conv(x))


class ExportsDifferently(nn.Module):
    """Computes something else under export than in eager mode: verification must catch it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        if torch.compiler.is_exporting():
            return y * 1.5
        return y


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
'''
    path = tmp_path / "user_nets.py"
    path.write_text(src)
    return path
