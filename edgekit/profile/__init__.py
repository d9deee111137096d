"""Latency measurement: run a compiled artifact in its runtime and write one latency report.

The report (schema `report.schema.json`, shared with the demo apps) carries every sample, the summary
statistics, load time, peak memory and per-op rows. `profile()` measures on this machine or on a phone
over adb; `load_report()` reads (and checks) a report a demo app wrote.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema

from ..compile import fixed_inputs, get_target, quiet, read_manifest, target_names
from ..compile.attribution import attributed_share, module_tree
from ..compile.manifest import loading
from ..compile.verification import running
from ..errors import ArtifactError, EdgekitError
from ..io import read_json
from ..specs import ProfileSpec
from .adb import measure_adb
from .devices import Device, find_device
from .timing import gc_paused, summarize, timed

SCHEMA_ID = "edgekit-latency-report/1"
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
NOISY = 0.10  # interquartile range over median above which a run is called noisy and repeated
# What a report may be: 4 MB holds 100 000 samples (the schema's most) with room to spare; nesting is 3 deep but for
# the module tree, two levels (a node, its children) per module level: its root is at 1, its leaves' fields at
# 2 + 2 * MODULE_DEPTH at most (the zoo's deepest module path has 6 parts).
MAX_REPORT_BYTES = 4 * 1024 * 1024
MODULE_DEPTH = 7  # module levels below the model a report's tree keeps; a deeper module's time stays in its parent
MAX_DEPTH = 2 + 2 * MODULE_DEPTH
MAX_RUNS = 100_000  # the schema's bound on runs, warmup and samples: measure no more than a report can hold


def schema() -> dict:
    """The report schema, with the runtimes it accepts taken from the registered targets."""
    s = json.loads(SCHEMA_PATH.read_text())
    s["properties"]["runtime"]["properties"]["name"]["enum"] = list(target_names())
    return s


def validate_report(report: dict, source: str = "report") -> dict:
    """Raise an EdgekitError naming the first field that breaks the schema, or the first statistic that does not
    fit the samples (NaN, a median outside them, `runs` that is not their count)."""
    if not isinstance(report, dict):
        raise EdgekitError(f"{source} is not a JSON object; give the file the demo app wrote")
    _check_shape(report, source)
    try:
        jsonschema.validate(report, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise EdgekitError(
            f"{source} is not an edgekit latency report: at {where}: {_schema_message(e)}; "
            "see edgekit/profile/report.schema.json"
        ) from None
    except RecursionError:
        raise EdgekitError(f"{source} is nested too deeply to be a latency report") from None
    _check_consistent(report, source)
    return report


def _schema_message(e: jsonschema.ValidationError) -> str:
    """jsonschema's message, without quoting a long value whole."""
    if e.validator in ("maxLength", "maxItems") and isinstance(e.instance, (str, list)):
        unit = "characters" if e.validator == "maxLength" else "items"
        return f"{len(e.instance)} {unit}, more than the {e.validator_value} allowed"
    quoted = repr(e.instance)
    if len(quoted) > 60 and quoted in e.message:  # "'aaaa…' does not match '^[0-9a-f]{64}$'"
        return _short(e.message.replace(quoted, quoted[:40] + "..."))
    return _short(e.message)


def _short(text: str, limit: int = 300) -> str:
    """One line of at most `limit` characters (jsonschema quotes the whole offending value)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_shape(report: dict, source: str) -> None:
    """No value nested deeper than MAX_DEPTH, and every number finite (NaN passes any `minimum`)."""
    stack: list[tuple[object, int, str]] = [(report, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise EdgekitError(f"{source} is nested more than {MAX_DEPTH} deep (at {where}); a latency report is not")
        if isinstance(value, float) and not math.isfinite(value):
            raise EdgekitError(f"{source} is not an edgekit latency report: at {where}: {value} is not a finite number")
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{where}/{k}".lstrip("/")) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}/{i}".lstrip("/")) for i, v in enumerate(value))


def _check_consistent(report: dict, source: str) -> None:
    """The statistics describe the samples: `runs` is their count and each statistic lies within them."""

    def bad(what: str) -> EdgekitError:
        return EdgekitError(f"{source} is not consistent: {what}; give the report the tool wrote, unedited")

    samples: list[float] = report["samples_ms"]
    stats: dict[str, float | None] = {k: report.get(k) for k in ("min_ms", "median_ms", "mean_ms", "p90_ms")}
    if samples:
        if report["runs"] != len(samples):
            raise bad(f"runs is {report['runs']} but samples_ms holds {len(samples)} samples")
        for k in ("min_ms", "median_ms", "p90_ms", "iqr_ms"):
            if report.get(k) is None:
                raise bad(f"{k} is missing, which a report with samples gives")
        lo, hi = min(samples), max(samples)
        slack = 1e-3 * max(1.0, hi)  # the apps round samples and statistics separately
        for k, v in stats.items():
            if v is not None and not lo - slack <= v <= hi + slack:
                raise bad(f"{k} {v} is outside the samples' range [{lo}, {hi}]")
        if report["iqr_ms"] > hi - lo + slack:
            raise bad(f"iqr_ms {report['iqr_ms']} is wider than the samples' range [{lo}, {hi}]")
    order = [(k, v) for k in ("min_ms", "median_ms", "p90_ms") if (v := stats[k]) is not None]
    for (k1, v1), (k2, v2) in zip(order, order[1:]):
        if v1 > v2 + 1e-3 * max(1.0, v2):
            raise bad(f"{k1} {v1} is above {k2} {v2}")


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(
            f"report '{path}' does not exist; give the JSON file a demo app or `edgekit profile --json` wrote"
        )
    if not path.is_file():
        raise ArtifactError(f"report '{path}' is not a file; give the JSON file a demo app or `edgekit profile` wrote")
    report = read_json(
        path,
        what="report",
        limit=MAX_REPORT_BYTES,
        too_big="the most a latency report can be",
        fix="give the file the demo app wrote",
        error=EdgekitError,
        read_fix="check its permissions",
        parse_constant=_no_constant,
        parse_float=_finite_float,
    )
    return validate_report(report, f"report '{path}'")


def _no_constant(name: str):
    raise ValueError(f"{name}, which is not a number in JSON (a latency is finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{_short(text, 40)}, a number too large to be a latency")
    return value


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


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The CPU flags that change benchmark ratios (VNNI: int8; AVX-512, bf16, AMX) this CPU has (Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in flags]
    except OSError:
        pass
    return []


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
    tracked = _reset_peak()  # VmHWM := VmRSS now; the baseline is read after the reset, never before it
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with loading(artifact, target.title or target.name, target.name):  # a plug-in target's loader too
        runner = target.load(artifact, manifest, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    notes: list[str] = []
    best: tuple[float, dict] | None = None
    with running(artifact, target):  # a file that loads but does not run: one line, not a traceback
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
            msg += (
                "; measuring again" if attempt < repeats else "; kept the quietest run, close other programs and retry"
            )
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
        "peak_memory_mb": round(max(0, peak_kb - rss0) / 1024, 2) if peak_kb and rss0 else None,
        "notes": notes,
    }
    runner = None  # type: ignore[assignment]  # unload before the per-op pass loads its own copy
    if per_op:
        report["ops"] = target.op_profile(artifact, x, threads)
        if report["ops"] is None:
            report.pop("ops")
            report["notes"].append(f"{manifest['target']} on this host exposes no per-op timing")
    return report


def module_fields(ops: list[dict]) -> dict:
    """The report's `modules` (the per-op rows' module tree, MODULE_DEPTH levels deep) and `attributed` (the share of
    op time with a module path); nothing where no row carries a module (TFLite's benchmark_model, old artifacts)."""
    tree = module_tree(ops)
    if tree is None:
        return {}
    _cut(tree, MODULE_DEPTH)
    return {"modules": tree, "attributed": attributed_share(ops)}


def _cut(node: dict, levels: int) -> None:
    """Drop the tree's nodes more than `levels` below `node`; their time stays in their ancestors' `ms`."""
    if levels <= 0:
        node["children"] = []
    for child in node["children"]:
        _cut(child, levels - 1)


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
    if not 1 <= runs <= MAX_RUNS or not 0 <= warmup <= MAX_RUNS:
        raise EdgekitError(
            f"--runs {runs} / --warmup {warmup}: give 1 to {MAX_RUNS} runs and 0 to {MAX_RUNS} warm-up runs"
        )
    if threads is not None and threads < 1:
        raise EdgekitError(f"--threads {threads}: give 1 or more (or leave it out for the device's default)")
    artifact = Path(artifact)
    manifest = read_manifest(artifact)  # checks the artifact against the sha256 in its manifest before it runs
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
    measured.update(module_fields(measured.get("ops") or []))
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
