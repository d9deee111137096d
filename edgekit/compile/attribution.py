"""Per-op time attributed to the user's modules: the rows of `edgekit profile --per-op` and their module tree.

A target's `op_profile` gives one `(op kind, module path or None, ms per inference)` triple per node (kernel) its
runtime timed; `op_rows` sums them per (op, module), and `module_tree` sums the rows up the module hierarchy
(layer -> block -> stage -> the model), which is what the JSON report, the database and the charts show.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

ROUND = 4

# -- XNNPACK's kernels lined up with the graph nodes they run ------------------------------------------------------
#
# XNNPACK's profiler names its operators alone ("Convolution (NHWC, F32) DWConv"), in the order its runtime runs them.
# It runs the graph's nodes in order, less what it fuses away (batch norms into convolutions, clamps into the op
# before them, pads into the convolution after, reshapes it elides) and plus the layout moves it inserts (NCHW <-> NHWC
# transposes): an alignment of the two sequences (edit distance, an event matching only a node of its kind) gives
# each kernel its node. ExecuTorch's delegate calls and LiteRT's XNNPACK delegate both run XNNPACK.

# XNNPACK operator (the name before its parenthesis) -> the kind it computes
XNN_KINDS = {
    "Convolution": "conv",
    "Deconvolution": "deconv",
    "Fully Connected": "gemm",
    "Batch Matrix Multiply": "bmm",
    "Add": "add",
    "Subtract": "sub",
    "Multiply": "mul",
    "Divide": "div",
    "Maximum": "max",
    "Minimum": "min",
    "Clamp": "clamp",
    "HardSwish": "hardswish",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "GELU": "gelu",
    "ELU": "elu",
    "Leaky ReLU": "leaky_relu",
    "Softmax": "softmax",
    "Square Root": "sqrt",
    "Reciprocal Square Root": "rsqrt",
    "Square": "square",
    "Exp": "exp",
    "Negate": "neg",
    "Absolute Value": "abs",
    "Mean": "mean",
    "Sum": "sum",
    "Global Average Pooling": "mean",
    "Average Pooling": "avg_pool",
    "Max Pooling": "max_pool",
    "Argmax Pooling": "max_pool",
    "Transpose": "layout",
    "Static Reshape": "reshape",
    "Copy": "reshape",
    "Concatenate": "cat",
    "Slice": "slice",
    "Even Split": "split",
    "Constant Pad": "pad",
    "Resize Bilinear": "resize",
    "Convert": "convert",
}
# what XNNPACK may run no kernel for: folded, fused into the op before, or free in its memory layout
ELIDABLE = frozenset({"clamp", "reshape", "layout", "convert"})


def event_kind(name: str) -> tuple[str, str]:
    """An XNNPACK event's kind, and its variant (`DWConv`, `IGEMM`, `GEMM`)."""
    base = re.sub(r" #\d+$", "", name)
    head, _, rest = base.partition(" (")
    return XNN_KINDS.get(head, head.lower()), rest.rpartition(")")[2].strip()


def _matches(event: tuple[str, str], kinds: set[str]) -> bool:
    kind, variant = event
    if "dwconv" in kinds:  # XNNPACK may run a large depthwise kernel (GreedyViG's 7x7) as an IGEMM
        return kind == "conv"
    return kind in kinds and not (kind == "conv" and variant == "DWConv")


def nearest_placed(modules: Sequence[str | None]) -> list[str | None]:
    """Each kernel's module, one left unplaced by `align_events` (a layout move XNNPACK inserted) given the next
    placed kernel's (the last placed one's at the end)."""
    out = list(modules)
    after = next((m for m in reversed(out) if m is not None), None)
    for k in reversed(range(len(out))):
        if out[k] is None:
            out[k] = after
        after = out[k]
    return out


def align_events(
    events: Sequence[tuple[str, str]], nodes: Sequence[set[str]], elidable: frozenset[str] = ELIDABLE
) -> list[int | None]:
    """For each event (`event_kind`), the index of the node it runs (None where none), the nodes given by the kinds
    of XNNPACK operator each may become: the alignment of least cost, where matching an event with a node of its
    kind is free, skipping a node costs 1 (nothing where XNNPACK may elide it: `elidable`, or a kind XNNPACK has no
    operator for) and leaving an event unmatched costs 1 (half for a layout move, which XNNPACK inserts)."""
    n, m = len(events), len(nodes)
    known = set(XNN_KINDS.values())
    skip_node = [0.0 if kinds & elidable or not kinds & known else 1.0 for kinds in nodes]
    skip_event = [0.5 if e[0] in ("layout", "reshape", "convert") else 1.0 for e in events]
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    move = [[0] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            c = cost[i][j]
            if c == inf:
                continue
            if i < n and j < m and c < cost[i + 1][j + 1] and _matches(events[i], nodes[j]):
                cost[i + 1][j + 1], move[i + 1][j + 1] = c, 1
            if j < m and c + skip_node[j] < cost[i][j + 1]:
                cost[i][j + 1], move[i][j + 1] = c + skip_node[j], 2
            if i < n and c + skip_event[i] < cost[i + 1][j]:
                cost[i + 1][j], move[i + 1][j] = c + skip_event[i], 3
    out: list[int | None] = [None] * n
    i, j = n, m
    while i or j:
        step = move[i][j]
        if step == 1:
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif step == 2:
            j -= 1
        else:
            i -= 1
    return out


def op_rows(times: Iterable[tuple[str, str | None, float]]) -> list[dict]:
    """Per-op rows from one `(op, module, ms)` per timed node: `{op, module, count, ms, share}` per (op, module),
    largest first. `module` is the user's module path ("" for an op of the model's own forward), None where the
    runtime's node carries none."""
    totals: dict[tuple[str, str | None], float] = defaultdict(float)
    counts: dict[tuple[str, str | None], int] = defaultdict(int)
    for op, module, ms in times:
        totals[(op, module)] += float(ms)
        counts[(op, module)] += 1
    grand = sum(totals.values()) or 1.0
    return [
        {
            "op": op,
            "module": module,
            "count": counts[op, module],
            "ms": round(ms, ROUND),
            "share": round(ms / grand, ROUND),
        }
        for (op, module), ms in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or ""))
    ]


def attributed_share(rows: list[dict]) -> float | None:
    """The share of the rows' time that carries a module path; None without rows (or time)."""
    total = sum(r["ms"] for r in rows)
    if not rows or total <= 0:
        return None
    return round(sum(r["ms"] for r in rows if r.get("module") is not None) / total, ROUND)


def module_tree(rows: list[dict]) -> dict | None:
    """The rows' time summed up the module hierarchy, None where no row carries a module.

    A node is `{"module": path, "ms": time of everything inside it, "self_ms": time of ops of this module itself
    (not of a submodule), "share": ms / the total of all rows, "children": [nodes, largest first]}`; the root is the
    model (`module` ""), and also says `unattributed_ms` (rows without a module, in the total but in no node).
    """
    total = sum(r["ms"] for r in rows)
    if total <= 0 or all(r.get("module") is None for r in rows):
        return None
    inside: dict[str, float] = defaultdict(float)
    own: dict[str, float] = defaultdict(float)
    for r in rows:
        path = r.get("module")
        if path is None:
            continue
        own[path] += r["ms"]
        parts = path.split(".") if path else []
        for i in range(len(parts) + 1):
            inside[".".join(parts[:i])] += r["ms"]

    def node(path: str) -> dict:
        depth = len(path.split(".")) if path else 0
        kids = [p for p in inside if p and len(p.split(".")) == depth + 1 and (not path or p.startswith(path + "."))]
        return {
            "module": path,
            "ms": round(inside[path], ROUND),
            "self_ms": round(own.get(path, 0.0), ROUND),
            "share": round(inside[path] / total, ROUND),
            "children": [node(k) for k in sorted(kids, key=lambda k: (-inside[k], k))],
        }

    root = node("")
    root["unattributed_ms"] = round(total - inside[""], ROUND)
    return root


def tree_rows(tree: dict | None, max_depth: int | None = None) -> list[tuple[int, dict]]:
    """The tree's nodes in display order (each parent before its children, largest first), with their depth."""
    out: list[tuple[int, dict]] = []

    def walk(n: dict, depth: int) -> None:
        out.append((depth, n))
        if max_depth is None or depth < max_depth:
            for c in n["children"]:
                walk(c, depth + 1)

    if tree is not None:
        walk(tree, 0)
    return out
