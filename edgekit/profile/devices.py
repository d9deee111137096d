"""Target/device definitions: the YAML files in `targets/` (one per compile target and device)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import EdgekitError

TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"


class ProfileHow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    via: Literal["host", "adb", "app"]
    tool: Optional[str] = None  # adb: executor_runner or benchmark_model
    remote_dir: str = "/data/local/tmp/edgekit"


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    target: Literal["executorch", "tflite", "onnx", "coreml"]
    device: str
    description: str = ""
    delegate: Optional[str] = None
    compute_units: Optional[str] = None
    min_os: Optional[str] = None
    quantization: Optional[str] = None
    threads: Optional[int] = None
    profile: ProfileHow

    def threads_for(self, threads: int | None) -> int:
        """The thread count a run uses: the one asked for, else the device's, else every core of this host."""
        return int(threads or self.threads or (os.cpu_count() if self.profile.via == "host" else 1))


def targets_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_TARGETS", TARGETS_DIR))


def load_devices(directory: str | Path | None = None) -> list[Device]:
    directory = Path(directory) if directory else targets_dir()
    devices = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            devices.append(Device(**(yaml.safe_load(path.read_text()) or {})))
        except (yaml.YAMLError, ValidationError, TypeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EdgekitError(f"target file '{path}' is not valid ({first}); fix it or remove it") from None
    return devices


def find_device(target: str, device: str) -> Device:
    """The definition for `target` on `device` (`host`, `android`, `adb:SERIAL` means android)."""
    name = "android" if device == "adb" or device.startswith("adb:") else device
    devices = load_devices()
    for d in devices:
        if d.target == target and (d.device == name or d.name == name):
            return d
    known = sorted({d.device for d in devices if d.target == target})
    raise EdgekitError(
        f"no device '{device}' for target {target} in {targets_dir()}; choose one of: {', '.join(known) or 'none'} "
        "(or add a YAML file there)"
    )
