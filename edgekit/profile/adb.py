"""Profiling on an Android phone over adb, with the benchmark binary the user provides.

ExecuTorch: `executor_runner` (built with XNNPACK) times `--num_executions` runs of the program;
LiteRT: `benchmark_model` (the TFLite benchmark tool), with `--enable_op_profiling` for per-op rows.
The parsers read what these tools print, in the formats their versions have printed (see
tests/data/adb/ for the recorded outputs they are tested on).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ..compile import get_target
from ..compile.attribution import op_rows
from ..errors import EdgekitError
from .devices import Device
from .timing import summarize

NUM = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
BINARY_ENV = {"executor_runner": "EDGEKIT_EXECUTOR_RUNNER", "benchmark_model": "EDGEKIT_BENCHMARK_MODEL"}


class ParseError(EdgekitError):
    pass


def _strip_prefix(line: str) -> str:
    return re.sub(r"^(INFO|WARNING|VERBOSE|ERROR): ", "", line.rstrip("\r\n"))


def _fields(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(rf"(\w+)={NUM}", line)}


def _table_rows(lines: list[str]) -> list[list[str]]:
    """Rows of a benchmark_model profiling table: cells split on tabs or runs of 2+ spaces."""
    rows = []
    for line in lines:
        if not line.strip() or line.startswith("="):
            break
        rows.append([c.strip() for c in re.split(r"\t+|\s{2,}", line.strip()) if c.strip()])
    return rows


def _run_order(lines: list[str]) -> list[dict]:
    """The run-order table's rows: {op, ms (per inference: its average times the times it is called), name (the
    node's output tensor, `[name]:index`; a delegate's kernel name inside a delegate)}."""
    head = _table_rows(lines[:1])
    cols = [c.strip("[]").lower() for c in head[0]] if head else []
    if not {"node type", "avg ms", "times called", "name"} <= set(cols):
        return []
    nodes = []
    for r in _table_rows(lines[1:]):
        if len(r) != len(cols):
            continue
        row = dict(zip(cols, r))
        try:
            ms = float(row["avg ms"]) * int(row["times called"])
        except ValueError:
            continue
        m = re.fullmatch(r"\[(.*)\]:\d+", row["name"])
        nodes.append({"op": row["node type"], "ms": ms, "name": m.group(1) if m else None})
    return nodes


def parse_benchmark_model(text: str) -> dict:
    """Timings (ms), memory (MB) and per-node-type rows of a `benchmark_model` run."""
    lines = [_strip_prefix(ln) for ln in text.splitlines()]
    counts = [_fields(ln) for ln in lines if re.match(r"\s*count=\d", ln)]
    out: dict = {}
    for ln in lines:
        m = re.search(rf"Initialized session in {NUM}\s*ms", ln)
        if m:
            out["load_ms"] = float(m.group(1))
        if ln.startswith("Inference timings in us:"):
            t = dict(re.findall(rf"([A-Za-z ()]+): {NUM}", ln.split(":", 1)[1]))
            t = {k.strip(): float(v) / 1e3 for k, v in t.items()}
            out.setdefault("load_ms", t.get("Init"))
            out["first_ms"] = t.get("First inference")
            out["warmup_mean_ms"] = t.get("Warmup (avg)")
            out["mean_ms"] = t.get("Inference (avg)")
        m = re.search(
            rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
            rf"init={NUM} overall={NUM}",
            ln,
        )
        if m:
            out["peak_memory_mb"] = float(m.group(2))
        m = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {NUM}", ln)
        if m:
            out["peak_memory_mb"] = float(m.group(1))
    regular = counts[-1] if counts else None
    if regular and "avg" in regular:  # the last count= line is the regular runs (the first, the warm-up)
        out.update(
            runs=int(regular["count"]),
            mean_ms=regular["avg"] / 1e3,
            min_ms=regular["min"] / 1e3,
            max_ms=regular["max"] / 1e3,
            std_ms=regular["std"] / 1e3,
        )
        if "median" in regular:
            out["median_ms"] = regular["median"] / 1e3
            out["p95_ms"] = regular["p95"] / 1e3
        if len(counts) > 1:
            out["warmup_runs"] = int(counts[0]["count"])
    # per node type, from the regular runs' summary table (not the initialization one); per node from its run order
    start = next((i for i, ln in enumerate(lines) if "Profiling Info for Regular Benchmark Runs" in ln), None)
    if start is not None:
        order = next((i for i in range(start, len(lines)) if "Run Order" in lines[i]), None)
        if order is not None:
            out["nodes"] = _run_order(lines[order + 1 :])
        head = next((i for i in range(start, len(lines)) if "Summary by node type" in lines[i]), None)
        if head is not None:
            rows = _table_rows(lines[head + 2 :])
            total = sum(float(r[2]) for r in rows) or 1.0
            out["ops"] = [
                {
                    "op": r[0],
                    "module": None,
                    "count": int(r[1]),
                    "ms": float(r[2]),
                    "share": round(float(r[2]) / total, 4),
                }
                for r in rows
            ]
    if "mean_ms" not in out and "ops" not in out:
        raise ParseError(
            "benchmark_model printed no timings (no 'count=' or 'Inference timings' line); run it by hand to see why"
        )
    return {k: v for k, v in out.items() if v is not None}


def parse_executor_runner(text: str) -> dict:
    """Executions, total and per-iteration time (ms) and load time of an `executor_runner` run."""
    out: dict = {"iterations_ms": []}
    for ln in text.splitlines():
        m = re.search(rf"Model executed successfully (\d+) time\(s\) in {NUM} ms", ln)
        if m:
            out["executions"], out["total_ms"] = int(m.group(1)), float(m.group(2))
        elif "Model executed successfully" in ln:
            out.setdefault("executions", None)
        m = re.search(rf"Iteration \d+ of \d+: {NUM} ms", ln)
        if m:
            out["iterations_ms"].append(float(m.group(1)))
        m = re.search(rf"Model loaded in {NUM} ms", ln)
        if m:
            out["load_ms"] = float(m.group(1))
    if "executions" not in out:
        raise ParseError("executor_runner did not report a successful execution; run it by hand to see why")
    if out["executions"] is None:
        raise ParseError(
            "this executor_runner prints no timing ('Model executed successfully.' only); "
            "build executor_runner from ExecuTorch 0.4 or later"
        )
    return out


# -- running on the phone ------------------------------------------------------------------------------


def _adb(serial: str | None, *args: str, timeout: float = 600) -> str:
    exe = shutil.which("adb")
    if exe is None:
        raise EdgekitError("adb is not on PATH; install Android platform-tools (apt-get install adb) and retry")
    cmd = [exe] + (["-s", serial] if serial else []) + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgekitError(f"`{' '.join(cmd[1:])}` took over {timeout:.0f} s; check the phone and retry") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise EdgekitError(
            f"`adb {' '.join(args[:2])}` failed: {err[-1] if err else proc.returncode}; "
            "check `adb devices` lists the phone"
        )
    return proc.stdout


def find_binary(tool: str, binary: str | Path | None) -> Path:
    path = binary or os.environ.get(BINARY_ENV.get(tool, ""), "")
    if not path:
        raise EdgekitError(
            f"profiling over adb needs your arm64 {tool} binary: give it with --binary PATH "
            f"(or set {BINARY_ENV.get(tool)})"
        )
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"--binary '{path}' does not exist; give the path of your arm64 {tool} build")
    return path


def measure_adb(
    artifact: Path,
    manifest: dict,
    dev: Device,
    device: str,
    *,
    runs: int,
    warmup: int,
    threads: int,
    per_op: bool,
    binary=None,
) -> tuple[dict, dict]:
    serial = device.split(":", 1)[1] if device.startswith("adb:") else None
    tool = dev.profile.tool or get_target(dev.target).adb_tool
    if tool not in BINARY_ENV:
        raise EdgekitError(
            f"{dev.target} has no benchmark tool for adb (edgekit drives {' and '.join(BINARY_ENV)}); "
            f"set profile.tool in the definition of {dev.name}"
        )
    exe = find_binary(tool, binary)
    remote = dev.profile.remote_dir.rstrip("/")
    _adb(serial, "shell", "mkdir", "-p", remote)
    _adb(serial, "push", str(exe), f"{remote}/{tool}")
    _adb(serial, "push", str(artifact), f"{remote}/{artifact.name}")
    _adb(serial, "shell", "chmod", "+x", f"{remote}/{tool}")
    notes: list[str] = []
    if tool == "executor_runner":
        text = _adb(
            serial,
            "shell",
            f"{remote}/{tool}",
            f"--model_path={remote}/{artifact.name}",
            f"--num_executions={warmup + runs}",
            f"--cpu_threads={threads}",
        )
        parsed = parse_executor_runner(text)
        samples = parsed["iterations_ms"][warmup:]
        if samples:
            measured = summarize([ms / 1e3 for ms in samples])
            measured.pop("runs")
        else:  # older runners print the total of all executions only; warm-up is inside it
            mean = parsed["total_ms"] / parsed["executions"]
            measured = {"samples_ms": [], "mean_ms": mean, "median_ms": None, "p90_ms": None}
            notes.append("executor_runner printed a total only: mean over all executions, warm-up included")
        measured["load_ms"] = parsed.get("load_ms")
        if per_op:
            notes.append(
                "per-op rows over adb: pull the ETDump executor_runner writes and open it with "
                "the ExecuTorch devtools Inspector"
            )
    else:
        args = [
            f"{remote}/{tool}",
            f"--graph={remote}/{artifact.name}",
            f"--num_threads={threads}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            "--min_secs=0",
        ]
        if per_op:
            args.append("--enable_op_profiling=true")
        parsed = parse_benchmark_model(_adb(serial, "shell", *args))
        measured = {
            "samples_ms": [],
            "min_ms": parsed.get("min_ms"),
            "mean_ms": parsed.get("mean_ms"),
            "median_ms": parsed.get("median_ms"),
            "p90_ms": None,
            "load_ms": parsed.get("load_ms"),
            "peak_memory_mb": parsed.get("peak_memory_mb"),
        }
        notes.append("benchmark_model gives a summary, not every sample")
        if parsed.get("nodes"):  # per node, each with its module where its output tensor's name gives one
            nodes = parsed["nodes"]
            named = [n for n in nodes if n["name"]]
            ops = [n["op"] for n in named]
            modules = (
                get_target(dev.target).op_modules(artifact, manifest, [n["name"] for n in named], ops) if named else {}
            )
            measured["ops"] = op_rows((n["op"], modules.get(n["name"]) if n["name"] else None, n["ms"]) for n in nodes)
        elif parsed.get("ops"):
            measured["ops"] = parsed["ops"]
    measured["notes"] = notes
    props = {
        k: _adb(serial, "shell", "getprop", p).strip()
        for k, p in (("model", "ro.product.model"), ("os", "ro.build.version.release"))
    }
    info = {"name": dev.device, "via": "adb", "model": props["model"], "os": f"Android {props['os']}"}
    if serial:
        info["serial"] = serial
    return {k: v for k, v in measured.items() if v is not None or k in ("median_ms", "p90_ms")}, info
