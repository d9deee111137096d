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
from pathlib import Path
from typing import Any

import yaml

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


def _op_bars(report: dict) -> str:
    ops = report.get("ops") or []
    if not ops:
        return ""
    top = max(o["ms"] for o in ops) or 1.0
    rows = "".join(
        f"<tr><td class='op'>{_e(o['op'])}</td><td>{_e(o.get('count'))}</td><td>{o['ms']:.3f}</td>"
        f"<td>{o.get('share', 0):.1%}</td><td style='text-align:left'><span class='bar' "
        f"style='width:{300 * o['ms'] / top:.0f}px'></span></td></tr>"
        for o in ops[:20]
    )
    a = report["artifact"]
    return (
        f"<h3>{_e(a.get('name') or a['sha256'][:12])} — {_e(report['runtime']['name'])} on "
        f"{_e(report['device']['name'])}, {report['threads']} threads</h3>"
        f"<table><tr><th>op</th><th>count</th><th>ms</th><th>share</th><th></th></tr>{rows}</table>"
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
    bars = [b for b in (_op_bars(r) for r in reports) if b]
    if bars:
        body += ["<h2>Per-op breakdown</h2>"] + bars
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
    bars = [b for b in (_op_bars(r) for r in reports) if b]
    if bars:
        body += ["<h2>Per-op breakdown</h2>"] + bars
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


def write_debug_report(result: dict, out: str | Path) -> Path:
    """`edgekit debug --html`: the module tree (indented by depth) with a bar per module for its relative error
    (log scale, 1e-7 to 1: an empty bar agrees to float rounding, a full one has lost the signal), the breach and,
    for a quantized artifact, the modules ranked by the error they add."""
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
    body.append("<h2>Modules</h2><table><tr><th>module</th><th>relative error</th><th></th><th>cosine</th>")
    body.append("<th>max abs</th><th>SNR dB</th></tr>")
    for r in result["rows"]:
        depth = r["module"].count(".")
        rel = max(float(r["rel_error"]), 1e-7)
        width = 320 * (7 + min(0.0, math.log10(rel))) / 7
        cls = "failed" if r["breach"] else ""
        body.append(
            f"<tr class='{cls}'><td style='padding-left:{8 + 14 * depth}px'><code>{_e(r['module'].rsplit('.', 1)[-1])}"
            f"</code></td><td>{r['rel_error']:.2e}</td><td class='op'><span class='bar' style='width:{width:.0f}px'>"
            f"</span></td><td>{r['cosine']:.5f}</td><td>{r['max_abs']:.3g}</td><td>{r['snr_db']:.1f}</td></tr>"
        )
    body.append("</table>")
    with atomic_path(out) as tmp:
        tmp.write_text(_page(f"edgekit debug {Path(result['artifact']).name}", body))
    return out
