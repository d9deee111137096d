"""Latency measurement: run a compiled artifact in its runtime and write one latency report.

The report (schema `report.schema.json`, shared with the demo apps) carries every sample, the summary
statistics, load time, peak memory and per-op rows. `profile()` measures on this machine or on a phone
over adb; `load_report()` reads (and checks) a report a demo app wrote.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema

from ..compile import fixed_inputs, get_target, quiet, read_manifest, target_names
from ..errors import ArtifactError, EdgekitError
from ..specs import ProfileSpec
from .adb import measure_adb
from .devices import Device, find_device
from .timing import gc_paused, summarize, timed

SCHEMA_ID = "edgekit-latency-report/1"
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
NOISY = 0.10  # interquartile range over median above which a run is called noisy and repeated


def schema() -> dict:
    """The report schema, with the runtimes it accepts taken from the registered targets."""
    s = json.loads(SCHEMA_PATH.read_text())
    s["properties"]["runtime"]["properties"]["name"]["enum"] = list(target_names())
    return s


def validate_report(report: dict, source: str = "report") -> dict:
    """Raise an EdgekitError naming the first field that breaks the schema."""
    try:
        jsonschema.validate(report, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise EdgekitError(
            f"{source} is not an edgekit latency report: at {where}: {e.message}; "
            "see edgekit/profile/report.schema.json"
        ) from None
    return report


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"report '{path}' does not exist; give the JSON file a demo app or `edgekit profile --json` wrote"
        )
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"report '{path}' is not valid JSON ({e}); give the file the demo app wrote") from None
    if not isinstance(report, dict):
        raise EdgekitError(f"report '{path}' is not a JSON object; give the file the demo app wrote")
    return validate_report(report, f"report '{path}'")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def host_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- memory: the resident set's high-water mark, reset before loading (Linux) ------------------------------


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


# -- measuring on this machine ------------------------------------------------------------------------------


def _host_input(manifest: dict):
    images, tensors = fixed_inputs(manifest, 1)
    return images[0] if manifest["preprocessing"].get("baked_in") else tensors[0].numpy()


def measure_host(
    artifact: Path,
    manifest: dict,
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    per_op: bool,
    repeats: int = 2,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Load and time the artifact in this process; a noisy run (IQR > 10 % of the median) is repeated."""
    target = get_target(manifest["target"])
    reason = target.runnable(manifest)
    if reason:
        raise EdgekitError(
            f"cannot profile '{artifact.name}' here: {reason}; profile it on the device and "
            "`edgekit profile import` the report"
        )
    x = _host_input(manifest)
    if target.runtime_module:  # a first import costs seconds: not the artifact's load time
        with quiet():
            importlib.import_module(target.runtime_module)
    rss0 = _status_kb("VmRSS")
    tracked = _reset_peak()
    t0 = time.perf_counter()
    runner = target.load(artifact, manifest, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    notes: list[str] = []
    best: tuple[float, dict] | None = None
    for attempt in range(1 + max(0, repeats)):
        timed(lambda: runner.run(x), warmup)
        with gc_paused():
            stats = summarize(timed(lambda: runner.run(x), runs))
        spread = stats["iqr_ms"] / stats["median_ms"] if stats["median_ms"] else 0.0
        if best is None or spread < best[0]:
            best = (spread, stats)
        if spread <= NOISY:
            break
        msg = (
            f"noisy run {attempt + 1}: IQR {stats['iqr_ms']:.2f} ms is {spread:.0%} of the median "
            f"{stats['median_ms']:.2f} ms"
        )
        msg += "; measuring again" if attempt < repeats else "; kept the quietest run, close other programs and retry"
        notes.append(msg)
        if warn:
            warn(msg)
    peak_kb = _status_kb("VmHWM") if tracked else None
    assert best is not None  # the loop runs at least once
    stats = best[1]
    samples = stats.pop("samples_ms")
    report = {
        "samples_ms": samples,
        **{k: round(v, 4) for k, v in stats.items() if k.endswith("_ms")},
        "load_ms": round(load_ms, 2),
        "peak_memory_mb": round((peak_kb - rss0) / 1024, 2) if peak_kb and rss0 else None,
        "notes": notes,
    }
    runner = None  # type: ignore[assignment]  # unload before the per-op pass loads its own copy
    if per_op:
        report["ops"] = target.op_profile(artifact, x, threads)
        if report["ops"] is None:
            report.pop("ops")
            report["notes"].append(f"{manifest['target']} on this host exposes no per-op timing")
    return report


def profile(
    artifact: str | Path,
    *,
    runs: int = ProfileSpec.default("runs"),
    warmup: int = ProfileSpec.default("warmup"),
    threads: int | None = ProfileSpec.default("threads"),
    device: str = ProfileSpec.default("device"),
    per_op: bool = ProfileSpec.default("per_op"),
    binary: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Measure `artifact` (beside its manifest) on `device` and return a latency report (validated)."""
    if runs < 1 or warmup < 0:
        raise EdgekitError(f"--runs {runs} / --warmup {warmup}: give at least 1 run and 0 or more warm-up runs")
    if threads is not None and threads < 1:
        raise EdgekitError(f"--threads {threads}: give 1 or more (or leave it out for the device's default)")
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    target = manifest["target"]
    dev: Device = find_device(target, device)
    threads = dev.threads_for(threads)
    if dev.profile.via == "app":
        raise EdgekitError(
            f"{dev.name} is profiled by its demo app: run the app's benchmark mode and "
            "`edgekit profile import REPORT.json`"
        )
    if dev.profile.via == "adb":
        measured, device_info = measure_adb(
            artifact, manifest, dev, device, runs=runs, warmup=warmup, threads=threads, per_op=per_op, binary=binary
        )
    else:
        measured = measure_host(artifact, manifest, runs=runs, warmup=warmup, threads=threads, per_op=per_op, warn=warn)
        device_info = {
            "name": dev.device,
            "via": "host",
            "model": host_name(),
            "os": f"{platform.system()} {platform.release()}",
        }
    quant = (manifest.get("quantization") or {}).get("scheme")
    report = {
        "schema": SCHEMA_ID,
        "created": now(),
        "device": device_info,
        "runtime": {
            "name": target,
            "version": get_target(target).runtime_version(),
            "delegate": manifest.get("options", {}).get("delegate") or dev.delegate,
            "compute_units": dev.compute_units,
        },
        "artifact": {
            "sha256": manifest["sha256"],
            "name": manifest["artifact"],
            "bytes": manifest["bytes"],
            "model": manifest.get("model", {}).get("reference") or manifest.get("model", {}).get("name"),
            "quantization": quant,
            "input_shape": manifest["inputs"][0]["shape"],
        },
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        **measured,
    }
    return validate_report(report, "the measured report")
