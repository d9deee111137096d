"""Per-op time of a compiled artifact: ExecuTorch's ETDump (devtools Inspector) and ONNX Runtime's profiler.

Rows are summed per op kind and given per inference: {op, module, count, ms, share}, largest first.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..compile.base import quiet


def _rows(totals: dict[str, float], counts: dict[str, int]) -> list[dict]:
    grand = sum(totals.values()) or 1.0
    return [
        {"op": k, "module": None, "count": counts[k], "ms": round(v, 4), "share": round(v / grand, 4)}
        for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
    ]


def executorch_op_profile(pte: str | Path, x: np.ndarray, threads: int | None, runs: int = 20) -> list[dict]:
    """Median time per op kind (XNNPACK kernels inside delegates, portable kernels outside)."""
    with quiet():
        from executorch.devtools import Inspector
        from executorch.extension.pybindings import portable_lib

        from ..compile.executorch import set_threads

        set_threads(threads)
        module = portable_lib._load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
        inp = (torch.from_numpy(np.ascontiguousarray(x)),)
        for _ in range(runs):
            module.forward(inp)
        with tempfile.TemporaryDirectory() as tmp:
            etdump = Path(tmp) / "run.etdp"
            module.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
            df = Inspector(etdump_path=str(etdump)).to_dataframe()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for _, row in df[df.event_block_name == "Execute"].iterrows():
        name = str(row.event_name)
        if name in ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"):
            continue
        kind = re.sub(r" #\d+$", "", name)
        raw = sorted(row.raw) if row.raw else [0.0]
        totals[kind] += raw[len(raw) // 2]
        counts[kind] += 1
    return _rows(totals, counts)


def onnx_op_profile(path: str | Path, x: np.ndarray, threads: int | None, runs: int = 20) -> list[dict]:
    """Mean time per ONNX op type from ONNX Runtime's own profiler (kernel time of every node)."""
    import onnxruntime as ort

    from ..compile.onnx import session_options

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        totals[op] += e["dur"] / 1e3 / runs
        counts[op] += 1
    return _rows(totals, {k: max(1, v // runs) for k, v in counts.items()})
