"""Target/device definitions: the YAML files in `edgekit/resources/targets/` (one per compile target and device)."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..compile import target_names
from ..errors import EdgekitError
from ..specs import MAX_THREADS

# shipped inside the package (a wheel carries them); `targets/` at the top of the source tree links here
TARGETS_DIR = Path(str(files("edgekit") / "resources" / "targets"))


class ProfileHow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    via: Literal["host", "adb", "app"]
    tool: str | None = None  # adb: executor_runner or benchmark_model
    remote_dir: str = "/data/local/tmp/edgekit"


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    target: str
    device: str
    description: str = ""
    delegate: str | None = None
    compute_units: str | None = None
    min_os: str | None = None
    quantization: str | None = None
    threads: int | None = None
    profile: ProfileHow

    @field_validator("target")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in target_names():
            raise ValueError(f"target '{v}' is not a registered target ({', '.join(target_names())})")
        return v

    def threads_for(self, threads: int | None) -> int:
        """The thread count a run uses: the one asked for, else the device's, else every core of this host.

        On the host, more threads than cores measure the scheduler, not the model (and thousands never finish)."""
        cores = os.cpu_count() or 1
        most = cores if self.profile.via == "host" else MAX_THREADS
        if threads is not None and not 1 <= threads <= most:
            where = f"this host has {cores} cores" if self.profile.via == "host" else f"at most {MAX_THREADS}"
            raise EdgekitError(f"--threads {threads} is out of range; give 1 to {most} ({where})")
        return int(threads or self.threads or (cores if self.profile.via == "host" else 1))


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
