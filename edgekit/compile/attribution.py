"""Per-op time attributed to the user's modules: the rows of `edgekit profile --per-op` and their module tree.

A target's `op_profile` gives one `(op kind, module path or None, ms per inference)` triple per node (kernel) its
runtime timed; `op_rows` sums them per (op, module), and `module_tree` sums the rows up the module hierarchy
(layer -> block -> stage -> the model), which is what the JSON report, the database and the charts show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

ROUND = 4


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
