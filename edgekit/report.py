"""`edgekit report DIR`: one self-contained HTML page (no server, no scripts, images inlined).

It gathers what DIR holds: artifact manifests (`*.pte.json`, `*.tflite.json`, ...), latency reports
(`edgekit profile --save`, the demo apps' REPORT.json), a selection (`selection.json`, `pareto.png`),
and the latency database's reports of those artifacts.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .compile.attribution import attributed_share, tree_rows
from .compile.base import EXPORT_WRAPPER_PREFIX
from .errors import EdgekitError
from .io import atomic_path
from .latency import LatencyDB, default_path

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f6f6f6}
.passed{color:#1a7f37}.failed{color:#cf222e}.skipped{color:#9a6700}
.bar{background:#4c72b0;height:12px;display:inline-block}.op{width:340px;text-align:left}
code{background:#f3f3f3;padding:1px 4px}
.tree{margin:.5em 0 1em}.tree .row{display:grid;grid-template-columns:var(--cols);align-items:center;
border-bottom:1px solid #eee;padding:2px 0}.tree .head{background:#f6f6f6;font-weight:600}
.tree .row>span{padding:0 8px;text-align:right;white-space:nowrap}.tree .row>span.name{text-align:left;overflow:hidden;
text-overflow:ellipsis}.tree summary{list-style:none;cursor:pointer}.tree summary::-webkit-details-marker{display:none}
.tree summary .name::before{content:'\\25B8  ';color:#888}.tree details[open]>summary .name::before{content:'\\25BE  '}
.tree .leaf .name::before{content:'\\00B7  ';color:#bbb}.tree .row>span.track{display:inline-block;padding:0;
background:#f0f0f0;height:12px}.tree .track .bar{display:block}.tree .failed .bar{background:#cf222e}
.tree .first{background:#ffebe9;font-weight:600}.tree .mark{color:#cf222e;font-weight:400}
.stack{display:flex;width:640px;height:18px;border:1px solid #ccc;margin:.4em 0}.stack span{height:100%}
.legend{font-size:12px;color:#555;margin-bottom:.6em}.legend .key{margin-right:1em;white-space:nowrap}
.legend .swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""


def _e(x) -> str:
    return html.escape("—" if x is None else str(x))


def _num(x, digits=2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def gather(directory: Path) -> dict:
    found: dict[str, Any] = {"manifests": [], "reports": [], "selection": None, "pareto": None}
    for path in sorted(directory.rglob("*.json")):
        data = _load_json(path)
        if not isinstance(data, dict):
            continue
        if data.get("schema") == "edgekit-latency-report/1":
            found["reports"].append(data)
        elif {"target", "sha256", "artifact", "inputs"} <= data.keys():
            found["manifests"].append((path, data))
        elif path.name == "selection.json" and "candidates" in data:
            found["selection"] = data
    pngs = sorted(directory.rglob("pareto.png"))
    found["pareto"] = pngs[0] if pngs else None
    return found


def _manifest_table(manifests) -> str:
    rows = []
    for _path, m in manifests:
        v = m.get("verification", {})
        status = v.get("status", "not run")
        detail = v.get("summary") or v.get("reason") or ""
        quant = (m.get("quantization") or {}).get("scheme") or "float"
        rows.append(
            f"<tr><td><code>{_e(m['artifact'])}</code></td><td>{_e(m['target'])}</td><td>{_e(m['model'].get('name'))}</td>"
            f"<td>{_e(quant)}</td><td>{m['bytes'] / 1e6:.2f}</td><td>{_e(m['preprocessing'].get('size'))}</td>"
            f"<td class='{_e(status)}'>{_e(status)}</td><td style='text-align:left'>{_e(detail)}</td>"
            f"<td><code>{_e(m['sha256'][:12])}</code></td></tr>"
        )
    head = (
        "<tr><th>artifact</th><th>target</th><th>model</th><th>quantization</th><th>MB</th><th>input</th>"
        "<th>verification</th><th>detail</th><th>sha256</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>No artifact manifests in this folder.</p>"


def _latency_table(reports: list[dict]) -> str:
    rows = []
    for r in reports:
        a = r["artifact"]
        rows.append(
            f"<tr><td><code>{_e(a.get('name') or a['sha256'][:12])}</code></td><td>{_e(r['runtime']['name'])}</td>"
            f"<td>{_e(r['device']['name'])} {_e(r['device'].get('model', ''))}</td><td>{r['threads']}</td>"
            f"<td>{_num(r.get('median_ms'), 3)}</td><td>{_num(r.get('min_ms'), 3)}</td>"
            f"<td>{_num(r.get('p90_ms'), 3)}</td>"
            f"<td>{_num(r.get('iqr_ms'), 3)}</td><td>{_num(r.get('mean_ms'), 3)}</td><td>{r['runs']}</td>"
            f"<td>{_num(r.get('load_ms'), 1)}</td><td>{_num(r.get('peak_memory_mb'), 1)}</td>"
            f"<td>{_e(r.get('created'))}</td></tr>"
        )
    head = (
        "<tr><th>artifact</th><th>runtime</th><th>device</th><th>threads</th><th>median ms</th><th>min</th>"
        "<th>p90</th><th>IQR</th><th>mean</th><th>runs</th><th>load ms</th><th>peak MB</th><th>measured</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>No latency reports for these artifacts.</p>"


def tree_chart(
    roots: list[dict],
    columns: list[tuple[str, Callable[[dict], str]]],
    bar: Callable[[dict], float | None],
    *,
    bar_header: str = "",
    row_class: Callable[[dict], str] | None = None,
    mark: Callable[[dict], str] | None = None,
    root_label: str = "model",
    open_depth: int = 3,
    reveal: str | None = None,
) -> str:
    """A module tree drawn as indented rows, a horizontal bar per node: `edgekit report`'s time by module and
    `edgekit debug --html`'s error by module.

    `roots` are nodes `{"module": path, "children": [nodes]}` (as `attribution.module_tree` gives, or any with
    those keys), drawn in `attribution.tree_rows` order (each parent before its children, in the children's order).
    A node with children is a `<details>`, open above `open_depth` (and on the way to the module `reveal`), so the
    tree reads to that depth and opens further by a click, without scripts. `bar(node)` is the bar's length as a
    fraction of its track (clipped to 0..1; None: no bar), `columns` the (header, cell HTML) after it, `row_class`
    extra classes of a node's row and `mark` HTML after its name. A node is named by its path below its parent's
    (`root_label` for the model, path ""), the full path in its title; every path is escaped here.
    """
    cols = "minmax(220px,340px) 300px" + " 90px" * len(columns)
    head = "".join(f"<span>{_e(h)}</span>" for h, _ in columns)
    parts = [
        f"<div class='tree' style='--cols:{cols}'><div class='row head'><span class='name'>module</span>"
        f"<span style='text-align:left'>{_e(bar_header)}</span>{head}</div>"
    ]
    for root in roots:
        paths: list[str] = []  # the path of the last node at each depth: the parent of the next one deeper
        opened: list[int] = []  # depths of the <details> not yet closed
        for depth, node in tree_rows(root):
            while opened and opened[-1] >= depth:
                parts.append("</details>")
                opened.pop()
            del paths[depth:]
            path = node["module"]
            parent = paths[-1] if paths else None
            paths.append(path)
            name = (
                root_label
                if path == ""
                else path[len(parent) + 1 :]
                if parent and path.startswith(parent + ".")
                else path
            )
            frac = bar(node)
            track = (
                "<span class='track'></span>"
                if frac is None
                else f"<span class='track'><span class='bar' style='width:{100 * min(max(frac, 0.0), 1.0):.2f}%'>"
                "</span></span>"
            )
            cells = "".join(f"<span>{f(node)}</span>" for _, f in columns)
            extra = mark(node) if mark else ""
            inner = (
                f"<span class='name' style='padding-left:{8 + 16 * depth}px' title='{_e(path or root_label)}'>"
                f"<code>{_e(name)}</code>{extra}</span>{track}{cells}"
            )
            cls = " ".join(
                ["row", *([] if node["children"] else ["leaf"]), *(row_class(node) if row_class else "").split()]
            )
            if node["children"]:
                show = depth < open_depth or (reveal is not None and (path == "" or reveal.startswith(path + ".")))
                parts.append(f"<details{' open' if show else ''}><summary class='{cls}'>{inner}</summary>")
                opened.append(depth)
            else:
                parts.append(f"<div class='{cls}'>{inner}</div>")
        parts += ["</details>"] * len(opened)
    parts.append("</div>")
    return "".join(parts)


STAGE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
MAX_STAGES = 8  # segments of the per-stage bar; the rest are one "other"


def _stage_bar(tree: dict) -> str:
    """The model's top-level modules (or, where one of them holds over 80 % of the time, its children) as segments
    of one 100 % bar, with the model's own ops and the unattributed time, and its legend."""
    unattributed = float(tree.get("unattributed_ms") or 0.0)
    total = tree["ms"] + unattributed
    if total <= 0:
        return ""
    stages = tree["children"]
    while stages and stages[0]["children"] and stages[0]["ms"] > 0.8 * total:
        big = stages[0]  # one module holds nearly all the time (MobileNet's `features`): its parts instead
        own = [{"module": f"{big['module']} (own ops)", "ms": big.get("self_ms", 0.0), "children": []}]
        stages = sorted(big["children"] + own + stages[1:], key=lambda c: -c["ms"])
    segs = [(c["module"], c["ms"], STAGE_COLOURS[i % len(STAGE_COLOURS)]) for i, c in enumerate(stages)]
    if len(segs) > MAX_STAGES:
        segs = segs[: MAX_STAGES - 1] + [("other modules", sum(s[1] for s in segs[MAX_STAGES - 1 :]), "#b0b0b0")]
    if tree.get("self_ms", 0.0) > 0:
        segs.append(("the model's own ops", tree["self_ms"], "#7f7f7f"))
    if unattributed > 0:
        segs.append(("unattributed", unattributed, "repeating-linear-gradient(45deg,#ddd 0 4px,#f4f4f4 4px 8px)"))
    bar = "".join(
        f"<span style='width:{100 * ms / total:.2f}%;background:{colour}' title='{_e(name)}: {ms:.3f} ms "
        f"({ms / total:.1%})'></span>"
        for name, ms, colour in segs
        if ms > 0
    )
    legend = "".join(
        f"<span class='key'><span class='swatch' style='background:{colour}'></span><code>{_e(name)}</code> "
        f"{ms:.3f} ms ({ms / total:.1%})</span>"
        for name, ms, colour in segs
        if ms > 0
    )
    return f"<div class='stack'>{bar}</div><div class='legend'>{legend}</div>"


def _is_tree(node, depth: int = 0) -> bool:
    """Whether `node` is a module tree as `attribution.module_tree` writes it (a report's JSON is read unchecked)."""

    def num(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    return (
        isinstance(node, dict)
        and depth <= 64
        and isinstance(node.get("module"), str)
        and num(node.get("ms"))
        and num(node.get("share", 0.0))
        and num(node.get("self_ms", 0.0))
        and isinstance(node.get("children"), list)
        and all(_is_tree(c, depth + 1) for c in node["children"])
    )


def _module_chart(report: dict, open_depth: int = 3) -> str:
    """A latency report's time by module: its per-stage bar and its module tree, a bar per module for its share of
    the op time (stage -> block -> layer shown, deeper levels a click away); "" for a report without `modules`."""
    tree = report.get("modules")
    if tree is None:
        return ""
    if not _is_tree(tree) or not isinstance(tree.get("unattributed_ms", 0.0), (int, float)):
        return "<h4>Time by module</h4><p>The report's module tree is not one edgekit writes; not drawn.</p>"
    attributed = report.get("attributed")
    if not isinstance(attributed, (int, float)):
        attributed = attributed_share(report.get("ops") or [])
    unattributed = tree.get("unattributed_ms")
    note = (
        f"<p>{_pct(attributed)} of the op time is attributed to the model's modules"
        + (f"; {unattributed:.3f} ms is not (ops the runtime names no module for)" if unattributed else "")
        + ". Bars: each module's share of all op time.</p>"
    )
    total = tree["ms"] + (unattributed or 0.0)

    def share(n: dict) -> float:  # the schema leaves `share` out where a writer has not got it
        return n["share"] if "share" in n else n["ms"] / total if total > 0 else 0.0

    chart = tree_chart(
        [tree],
        [
            ("ms", lambda n: f"{n['ms']:.3f}"),
            ("share", lambda n: f"{share(n):.1%}"),
            ("own ms", lambda n: f"{n['self_ms']:.3f}" if n.get("self_ms") else "—"),
        ],
        share,
        bar_header="share of op time",
        open_depth=open_depth,
    )
    return f"<h4>Time by module</h4>{note}{_stage_bar(tree)}{chart}"


def _op_table(report: dict) -> str:
    ops = report.get("ops") or []
    if not ops:
        return ""
    top = max(o["ms"] for o in ops) or 1.0
    rows = "".join(
        f"<tr><td class='op'>{_e(o['op'])}</td><td style='text-align:left'><code>{_e(o.get('module'))}</code></td>"
        f"<td>{_e(o.get('count'))}</td><td>{o['ms']:.3f}</td>"
        f"<td>{o.get('share', 0):.1%}</td><td style='text-align:left'><span class='bar' "
        f"style='width:{300 * o['ms'] / top:.0f}px'></span></td></tr>"
        for o in ops[:20]
    )
    more = f"<p>… and {len(ops) - 20} more rows in the report's JSON.</p>" if len(ops) > 20 else ""
    return (
        "<h4>Time by op</h4><table><tr><th>op</th><th style='text-align:left'>module</th><th>count</th><th>ms</th>"
        f"<th>share</th><th></th></tr>{rows}</table>{more}"
    )


def _breakdown(report: dict) -> str:
    """A latency report's time by module (where it has `modules`) and by op (where it has `ops`); "" with neither."""
    charts = _module_chart(report) + _op_table(report)
    if not charts:
        return ""
    a = report["artifact"]
    return (
        f"<h3>{_e(a.get('name') or a['sha256'][:12])} — {_e(report['runtime']['name'])} on "
        f"{_e(report['device']['name'])}, {report['threads']} threads</h3>{charts}"
    )


def _selection(sel: dict, pareto: Path | None) -> str:
    parts = []
    c = sel.get("chosen")
    if c:
        parts.append(
            f"<p>Chosen for {_e(sel['target'])} on {_e(sel['device'])} ({sel['threads']} threads) within "
            f"{sel['budget_ms']:g} ms: <b>{_e(c['model'])}</b>, measured {_num(c['measured_ms'])} ms, "
            f"top-1 {_num(c['accuracy'], 1)} % ({_e(c['accuracy_source'])}).</p>"
        )
    if pareto is not None:
        b64 = base64.b64encode(pareto.read_bytes()).decode()
        parts.append(f"<img alt='accuracy-latency Pareto front' src='data:image/png;base64,{b64}'>")
    rows = "".join(
        f"<tr><td>{_e(k['name'])}</td><td>{_num(k['accuracy'], 1)}</td><td>{_e(k['accuracy_source'])}</td>"
        f"<td>{_num(k['predicted_ms'])}</td><td>{_num(k['measured_ms'])}</td><td>{_e(k['status'])}</td></tr>"
        for k in sel["candidates"]
    )
    parts.append(
        "<table><tr><th>candidate</th><th>top-1 %</th><th>accuracy from</th><th>predicted ms</th>"
        f"<th>measured ms</th><th>status</th></tr>{rows}</table>"
    )
    return "".join(parts)


def _page(title: str, body: list[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def step_detail(s: dict) -> str:
    """One line on a step of a run (run.json's entry): what it gave, or why it did not run. Also the CLI's."""
    r = s.get("summary") or {}
    if s["status"] in ("failed", "skipped", "blocked"):
        return s.get("error") or s.get("reason") or ""
    if s["kind"] in ("train", "distill"):
        text = f"val accuracy {_pct(r.get('val_accuracy_before'))} → {_pct(r.get('val_accuracy'))}"
        if r.get("teacher_val_accuracy") is not None:
            text += f" (teacher {_pct(r['teacher_val_accuracy'])})"
        return text + f", {r.get('epochs')} epochs on {r.get('train_images')} images of {r.get('data')}"
    if s["kind"] == "prune":
        b, a = r["before"], r["after"]
        return (
            f"{r['method']} {r['ratio']:.0%}{' structured' if r.get('structured') else ''}: params "
            f"{b['params'] / 1e6:.3f} M → {a['params'] / 1e6:.3f} M, MACs {b['macs'] / 1e6:.1f} M → "
            f"{a['macs'] / 1e6:.1f} M"
        )
    if s["kind"] == "compile":
        text = f"{r['artifact']} ({r['bytes'] / 1e6:.2f} MB), verification {r['verification'].get('status')}"
        acc = (r.get("quantization") or {}).get("accuracy") or {}
        if acc.get("status") == "measured":
            text += (
                f"; {r['quantization']['scheme']}: accuracy {_pct(acc['float'])} → {_pct(acc['quantized'])}, "
                f"agreement {_pct(acc['agreement'])}"
            )
        return text
    if s["kind"] == "profile":
        return f"median {_num(r.get('median_ms'), 3)} ms, p90 {_num(r.get('p90_ms'), 3)} ms, {r.get('threads')} threads"
    return ""


def write_run_report(run_dir: str | Path, run: dict) -> Path:
    """RUN/report.html for `edgekit run`: the steps (status, key, time), the model's path through them, the
    artifacts with their verification and the latencies measured, from this run's files only."""
    run_dir = Path(run_dir)
    manifests, reports = [], []
    for a in run.get("artifacts", []):
        data = _load_json(run_dir / a["path"]) if a["kind"] in ("manifest", "latency_report") else None
        if data is not None:
            (manifests.append((run_dir / a["path"], data)) if a["kind"] == "manifest" else reports.append(data))
    rows = "".join(
        f"<tr><td>{_e(s['name'])}</td><td class='{_e(s['status'])}'>{_e(s['status'])}</td>"
        f"<td>{_num(s.get('seconds'), 1)}</td><td><code>{_e(s['key'][:12])}</code></td>"
        f"<td style='text-align:left'>{_e(step_detail(s))}</td></tr>"
        for s in run["steps"]
    )
    rec = run["recipe"]

    body = [
        f"<h1>edgekit run: {_e(rec['resolved']['name'])}</h1>",
        f"<p>{_e(rec['resolved'].get('description'))}</p>",
        f"<p>Recipe <code>{_e(rec['path'])}</code> (sha256 <code>{_e(rec['sha256'][:12])}</code>)"
        + (f", overrides <code>{_e(' '.join(rec['overrides']))}</code>" if rec["overrides"] else "")
        + f"; status <b>{_e(run['status'])}</b>; {_num(run.get('seconds'), 1)} s; "
        f"edgekit {_e(run['edgekit_version'])}.</p>",
        "<h2>Steps</h2><table><tr><th>step</th><th>status</th><th>seconds</th><th>key</th><th>result</th></tr>"
        f"{rows}</table>",
        "<h2>Artifacts and verification</h2>",
        _manifest_table(manifests),
        "<h2>Latency</h2>",
        _latency_table(reports),
    ]
    bars = [b for b in (_breakdown(r) for r in reports) if b]
    if bars:
        body += ["<h2>Where the time goes</h2>"] + bars
    body += ["<h2>Resolved recipe</h2>", f"<pre>{_e(yaml.safe_dump(rec['resolved'], sort_keys=False))}</pre>"]
    out = run_dir / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(_page(f"edgekit run {rec['resolved']['name']}", body))
    return out


def render(directory: Path, db_path: str | Path | None = None) -> str:
    found = gather(directory)
    reports = list(found["reports"])
    shas = {m["sha256"] for _, m in found["manifests"]}
    if shas and (db_path is not None or _default_db_exists()):
        with LatencyDB(db_path) as db:
            seen = {(r["artifact"]["sha256"], r.get("created")) for r in reports}
            for sha in sorted(shas):  # only these artifacts' reports, not the whole database's JSON
                reports += [
                    row["report"]
                    for row in db.rows(sha256=sha, with_report=True)
                    if (sha, row["report"].get("created")) not in seen
                ]
    if not (found["manifests"] or reports or found["selection"]):
        raise EdgekitError(
            f"'{directory}' holds no manifests, latency reports or selection.json; "
            "give the --out folder of `edgekit compile`, `profile --save` or `select`"
        )
    body = [
        f"<h1>edgekit report: {_e(directory)}</h1>",
        "<h2>Artifacts and verification</h2>",
        _manifest_table(found["manifests"]),
        "<h2>Latency</h2>",
        _latency_table(reports),
    ]
    bars = [b for b in (_breakdown(r) for r in reports) if b]
    if bars:
        body += ["<h2>Where the time goes</h2>"] + bars
    if found["selection"]:
        body += ["<h2>Selection under a latency budget</h2>", _selection(found["selection"], found["pareto"])]
    return _page("edgekit report", body)


def _default_db_exists() -> bool:
    return default_path().is_file()


def write_report(directory: str | Path, out: str | Path | None = None, db: str | Path | None = None) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgekitError(f"'{directory}' is not a folder; give the folder `edgekit compile --out` wrote to")
    page = render(directory, db)
    out = Path(out) if out else directory / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    return out


def _error_tree(rows: list[dict]) -> list[dict]:
    """`edgekit debug`'s rows (in the order the modules finish) as a module tree: each row under the nearest of its
    parents that has a row, siblings in the order they ran. The export wrapper's `model` row, the user's whole
    model (it finishes last), is the root where it is there."""
    nodes = {r["module"]: {**r, "children": []} for r in rows}
    whole = EXPORT_WRAPPER_PREFIX.rstrip(".")
    root = nodes[whole] if rows and rows[-1]["module"] == whole else None
    if root is not None:
        root["module"] = ""  # the tree's name for the model
    roots: list[dict] = []
    for r in rows:
        path = r["module"]
        if root is not None and path == whole:
            continue
        parts = path.split(".")
        parent = next((nodes[p] for i in range(len(parts) - 1, 0, -1) if (p := ".".join(parts[:i])) in nodes), None)
        if parent is not None and parent is not root:
            parent["children"].append(nodes[path])
        elif root is not None:
            root["children"].append(nodes[path])
        else:
            roots.append(nodes[path])
    return [root] if root is not None else roots


def _log_error(rel: float) -> float:
    """A relative error's place on the log scale 1e-7 (agrees to float rounding) .. 1 (the signal is lost)."""
    return (7 + min(0.0, math.log10(max(float(rel), 1e-7)))) / 7


def write_debug_report(result: dict, out: str | Path) -> Path:
    """`edgekit debug --html`: the module tree (`tree_chart`, as `edgekit report`'s time by module) with a bar per
    module for its relative error (log scale, 1e-7 to 1: an empty bar agrees to float rounding, a full one has lost
    the signal), the breach highlighted (and its branch opened) and, for a quantized artifact, the modules ranked by
    the error they add."""
    out = Path(out)
    first = result.get("first_breach")
    body = [
        f"<h1>edgekit debug: {_e(Path(result['artifact']).name)}</h1>",
        f"<p>{_e(result['target'])}, {result['samples']} input(s); {result['modules_compared']} of "
        f"{result['modules_in_model']} modules compared; tolerance <code>{_e(result['tolerance'])}</code></p>",
        (
            f"<p class='failed'>first module beyond tolerance: <code>{_e(first['module'])}</code> "
            f"(cosine {first['cosine']:.5f}, max abs error {first['max_abs']:.3g})</p>"
            if first
            else "<p class='passed'>every compared module is within tolerance</p>"
        ),
    ]
    if result.get("quantized") and result.get("worst_added"):
        body.append("<h2>Error added, by module</h2><table><tr><th>module</th><th>added</th><th>SNR dB</th></tr>")
        for r in result["worst_added"]:
            body.append(
                f"<tr><td><code>{_e(r['module'])}</code></td><td>{r['added']:.4f}</td><td>{r['snr_db']:.1f}</td></tr>"
            )
        body.append("</table><p>keep them float: <code>" + _e(" ".join(result["float_layer_args"])) + "</code></p>")
    first_path = first["module"] if first else None
    whole = EXPORT_WRAPPER_PREFIX.rstrip(".")
    roots = _error_tree(result["rows"])
    reveal = None if first_path is None else "" if first_path == whole else first_path
    hit = next((n for root in roots for _, n in tree_rows(root) if n["module"] == reveal), None)
    body += [
        "<h2>Modules</h2>",
        "<p>Bars: each module's output's relative error to PyTorch's, log scale from 1e-7 (empty) to 1 (full).</p>",
        tree_chart(
            roots,
            [
                ("relative error", lambda n: f"{n['rel_error']:.2e}"),
                ("cosine", lambda n: f"{n['cosine']:.5f}"),
                ("max abs", lambda n: f"{n['max_abs']:.3g}"),
                ("SNR dB", lambda n: f"{n['snr_db']:.1f}"),
            ],
            lambda n: _log_error(n["rel_error"]),
            bar_header="relative error (log)",
            row_class=lambda n: ("failed" if n["breach"] else "") + (" first" if n is hit else ""),
            mark=lambda n: " <span class='mark'>◀ first beyond tolerance</span>" if n is hit else "",
            open_depth=3 if roots and roots[0]["module"] == "" else 2,
            reveal=reveal,
        ),
    ]
    with atomic_path(out) as tmp:
        tmp.write_text(_page(f"edgekit debug {Path(result['artifact']).name}", body))
    return out
