from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official_state_dicts"


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


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `edgekit` entry point as a user would."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
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


class UsesErfinv(nn.Module):
    """erfinv has no lowering on any edgekit target."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.erfinv(torch.tanh(self.conv(x))).flatten(1)


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
