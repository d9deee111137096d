"""Per-op time of an ExecuTorch program: ETDump events read back through the devtools Inspector."""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..compile.base import quiet


def executorch_op_profile(pte: str | Path, x: np.ndarray, threads: int, runs: int = 20) -> list[dict]:
    """Median time per op kind (XNNPACK kernels inside delegates, portable kernels outside), largest first."""
    with quiet():
        from executorch.devtools import Inspector
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(int(threads))
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
    grand = sum(totals.values()) or 1.0
    rows = [
        {"op": k, "count": counts[k], "ms": round(v, 3), "share": round(v / grand, 4)}
        for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
    ]
    return rows
