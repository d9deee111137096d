"""The pictures of `edgekit report`, `edgekit run`'s report and `edgekit debug --html`: the module tree with a bar
per module (time share for a latency report, log-scale error for debug), drawn by one renderer (`tree_chart`).

The pages are parsed back: each row's module path (its title), its bar's width and the `<details>` it sits in.
"""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgekit import report as report_mod
from edgekit.compile.attribution import attributed_share, module_tree, op_rows, tree_rows
from edgekit.report import render, tree_chart, write_debug_report, write_run_report

from .conftest import run_cli

SHA = "ab" * 32

# (op, module, ms) per timed node, as a MobileNetV2-like ONNX Runtime profile gives them: stages, blocks, layers,
# a few ops of the model's own forward ("") and some the runtime names no module for (None)
TIMES = [
    ("Conv", "features.0.0", 0.30),
    ("Clip", "features.0.2", 0.05),
    ("Conv", "features.1.conv.0.0", 0.20),
    ("Conv", "features.1.conv.1", 0.12),
    ("Conv", "features.2.conv.0.0", 0.25),
    ("Conv", "features.2.conv.1.0", 0.18),
    ("Conv", "features.2.conv.2", 0.22),
    ("Add", "features.3", 0.01),
    ("Conv", "features.3.conv.0.0", 0.15),
    ("Conv", "features.3.conv.2", 0.16),
    ("Conv", "features.18.0", 0.40),
    ("GlobalAveragePool", "", 0.02),
    ("Flatten", "", 0.01),
    ("Gemm", "classifier.1", 0.08),
    ("Transpose", None, 0.04),
    ("MemcpyToHost", None, 0.03),
]


def latency_report(times=TIMES, name: str = "mobilenetv2_100.onnx", with_modules: bool = True) -> dict:
    ops = op_rows(times)
    r = {
        "schema": "edgekit-latency-report/1",
        "created": "2025-01-01T00:00:00+00:00",
        "device": {"name": "host", "via": "host", "model": "test CPU"},
        "runtime": {"name": "onnx", "version": "1.20"},
        "artifact": {"sha256": SHA, "name": name},
        "threads": 1,
        "warmup": 2,
        "runs": 3,
        "samples_ms": [2.4, 2.5, 2.6],
        "median_ms": 2.5,
        "p90_ms": 2.6,
        "ops": ops,
    }
    if with_modules:
        r["modules"] = module_tree(ops)
        r["attributed"] = attributed_share(ops)
    return r


class Rows(HTMLParser):
    """The rows of a page's module trees: (path, bar width % or None, <details> around the row, row classes),
    and the `open` flag of each <details> by the path of its summary."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.details: list[dict] = []  # the open <details> elements, outermost first
        self.opened: dict[str, bool] = {}
        self.classes: list[str] = []
        self.segments: list[float] = []
        self.in_stack = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "details":
            self.details.append({"open": "open" in a, "path": None})
        elif tag in ("summary", "div") and "row" in cls and "head" not in cls:
            self.classes = cls
        elif tag == "span" and "name" in cls and "title" in a:
            self.rows.append({"path": a["title"], "width": None, "nesting": len(self.details), "classes": self.classes})
            if self.classes and "leaf" not in self.classes:  # a summary: this row's <details> is the innermost
                self.details[-1]["path"] = a["title"]
                self.opened[a["title"]] = self.details[-1]["open"]
        elif tag == "span" and "bar" in cls and a["style"].endswith("%"):  # not the op table's (px)
            self.rows[-1]["width"] = float(re.fullmatch(r"width:([\d.]+)%", a["style"]).group(1))
        elif tag == "div" and "stack" in cls:
            self.in_stack = True
        elif tag == "span" and self.in_stack:
            self.segments.append(float(re.match(r"width:([\d.]+)%", a["style"]).group(1)))

    def handle_endtag(self, tag):
        if tag == "details":
            self.details.pop()
        elif tag == "div":
            self.in_stack = False


def parse(page: str) -> Rows:
    p = Rows()
    p.feed(page)
    assert not p.details, "every <details> is closed"
    return p


def save(tmp_path: Path, *reports: dict) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, r in enumerate(reports):
        (folder / f"r{i}.json").write_text(json.dumps(r))
    return folder


def test_time_by_module_has_a_bar_per_module_in_tree_order(tmp_path):
    r = latency_report()
    page = render(save(tmp_path, r))
    p = parse(page)
    nodes = tree_rows(r["modules"])
    assert len(nodes) > 15
    assert [row["path"] for row in p.rows] == [n["module"] or "model" for _, n in nodes]  # parents first, largest first
    for row, (depth, n) in zip(p.rows, nodes):
        assert row["width"] == pytest.approx(100 * n["share"], abs=0.006), row  # proportional to the share of all time
        # a node with children is the summary of its own <details>, inside its ancestors'; a leaf only in theirs
        assert row["nesting"] == depth + (1 if n["children"] else 0), row
        assert p.opened.get(row["path"], depth < 3) == (depth < 3)  # open to depth 3 (layers), deeper a click away
    widths = {row["path"]: row["width"] for row in p.rows}
    assert widths["features"] > widths["features.2"] > widths["features.2.conv.0"]
    assert widths["model"] == pytest.approx(100 * r["attributed"], abs=0.006)
    assert 0 < r["attributed"] < 1
    # the labels: every node's ms and share; the attributed share and the unattributed ms
    assert f"{r['modules']['children'][0]['ms']:.3f}" in page and f"{r['modules']['children'][0]['share']:.1%}" in page
    assert f"{100 * r['attributed']:.2f} % of the op time is attributed" in page
    assert f"{r['modules']['unattributed_ms']:.3f} ms is not" in page
    # the per-stage bar: the stages (`features` holds over 80 %: its blocks instead), the model's own ops and the
    # unattributed time make up 100 %
    legend = page[page.index("<div class='legend'>") :].split("</div>")[0]
    names = re.findall(r"<code>(.*?)</code>", legend)
    assert names[:3] == ["features.2", "features.18", "features.0"]  # largest first
    assert {"classifier", "the model&#x27;s own ops", "unattributed"} <= set(names) and "features" not in names
    assert len(p.segments) == len(names) and sum(p.segments) == pytest.approx(100, abs=0.05)
    # the op table keeps its bars and names each row's module
    table = page[page.index("<h4>Time by op</h4>") :]
    assert "<th style='text-align:left'>module</th>" in table and "<code>features.18.0</code>" in table
    assert table.count("<tr>") == len(r["ops"]) + 1 and "class='bar'" in table


def test_tree_chart_is_the_renderer_of_both_pages():
    tree = module_tree(op_rows(TIMES))
    html = tree_chart([tree], [("ms", lambda n: f"{n['ms']:.3f}")], lambda n: n["share"], open_depth=1)
    p = parse(html)
    assert len(p.rows) == len(tree_rows(tree))
    assert [path for path, is_open in p.opened.items() if is_open] == ["model"]  # open_depth 1: the model's level
    reveal = "features.2.conv.1.0"  # a module deep down: its branch is opened
    p = parse(tree_chart([tree], [], lambda n: None, open_depth=1, reveal=reveal))
    assert {path for path, is_open in p.opened.items() if is_open} == {
        "model",
        "features",
        "features.2",
        "features.2.conv",
        "features.2.conv.1",
    }
    assert all(row["width"] is None for row in p.rows)  # no bar where bar() says None


def test_module_paths_and_names_are_escaped(tmp_path):
    evil = "blocks.<script>alert('x')</script>"
    times = [("Conv", evil, 1.0), ("<img src=x onerror=alert(1)>", "blocks.0", 0.5), ("Add", None, 0.1)]
    r = latency_report(times, name="<b>net</b>.onnx")
    page = render(save(tmp_path, r))
    assert "<script>" not in page and "<img" not in page and "<b>net" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    p = parse(page)
    assert evil in [row["path"] for row in p.rows]  # the title attribute gives the path back unchanged
    debug_page = tmp_path / "d.html"
    write_debug_report(debug_result(extra_module=evil), debug_page)
    text = debug_page.read_text()
    assert "<script>" not in text and evil in [row["path"] for row in parse(text).rows]


def test_a_report_without_modules_renders_without_a_chart(tmp_path):
    plain = latency_report(with_modules=False)
    damaged = latency_report(name="damaged.onnx")
    damaged["modules"] = {"module": "", "ms": "1", "children": [None]}
    bare = {k: v for k, v in latency_report(name="bare.onnx", with_modules=False).items() if k != "ops"}
    page = render(save(tmp_path, plain, damaged, bare))
    assert "class='tree'" not in page and "class='stack'" not in page
    assert page.count("<h4>Time by op</h4>") == 2  # the plain and the damaged report keep their op tables
    assert "module tree is not one edgekit writes" in page
    assert "bare.onnx" in page


def test_a_tree_without_shares_is_drawn_from_its_times(tmp_path):
    r = latency_report()
    shares = {n["module"]: n.pop("share") for _, n in tree_rows(r["modules"])}  # optional in the schema
    p = parse(render(save(tmp_path, r)))
    assert [row["width"] for row in p.rows] == pytest.approx(
        [100 * shares["" if row["path"] == "model" else row["path"]] for row in p.rows], abs=0.01
    )


def test_the_run_report_draws_the_module_chart(tmp_path):
    r = latency_report()
    (tmp_path / "latency.json").write_text(json.dumps(r))
    run = {
        "recipe": {"resolved": {"name": "demo"}, "path": "demo.yaml", "sha256": "0" * 64, "overrides": []},
        "status": "passed",
        "seconds": 1.0,
        "edgekit_version": "0",
        "steps": [],
        "artifacts": [{"kind": "latency_report", "path": "latency.json"}],
    }
    page = write_run_report(tmp_path, run).read_text()
    assert "<h4>Time by module</h4>" in page
    assert len(parse(page).rows) == len(tree_rows(r["modules"]))


# ---- edgekit debug --html


def _row(module: str, rel: float, breach: bool = False) -> dict:
    return {
        "module": module,
        "shape": [1, 8, 4, 4],
        "max_abs": rel * 3,
        "cosine": 1 - rel,
        "snr_db": -20 * math.log10(rel),
        "rel_error": rel,
        "breach": breach,
        "added": rel / 2,
    }


def debug_result(extra_module: str | None = None) -> dict:
    """A debug result as `compare_modules` gives it: rows in the order the modules finish (children before their
    parent), the export wrapper's `model` (the whole model) last; the defect in features.1.conv.1.0."""
    order = [
        ("features.0.0", 1e-7),
        ("features.0.1", 2e-7),
        ("features.0", 2e-7),
        ("features.1.conv.0.0", 3e-7),
        ("features.1.conv.0", 3e-7),
        ("features.1.conv.1.0", 0.4),
        ("features.1.conv.1", 0.4),
        ("features.1.conv", 0.4),
        ("features.1", 0.45),
        ("features", 0.45),
        ("classifier.1", 0.6),
        ("classifier", 0.6),
    ]
    if extra_module:
        order.insert(0, (extra_module, 1e-3))
    rows = [_row(m, rel, breach=rel > 0.1) for m, rel in order] + [_row("model", 0.6, breach=True)]
    return {
        "artifact": "/tmp/x/mobilenetv2_100.onnx",
        "target": "onnx",
        "quantized": False,
        "samples": 1,
        "tolerance": {"atol": 1e-4, "rtol": 1e-3, "min_cosine": 0.999},
        "modules_compared": len(rows),
        "modules_in_model": len(rows),
        "first_breach": rows[[r["module"] for r in rows].index("features.1.conv.1.0")],
        "worst_added": [],
        "float_layer_args": [],
        "rows": rows,
    }


def test_debug_page_draws_the_error_tree_and_highlights_the_breach(tmp_path):
    out = write_debug_report(debug_result(), tmp_path / "d.html")
    p = parse(out.read_text())
    paths = [row["path"] for row in p.rows]
    # the whole model first, then each module before its children, siblings in the order they ran
    assert paths == [
        "model",
        "features",
        "features.0",
        "features.0.0",
        "features.0.1",
        "features.1",
        "features.1.conv",
        "features.1.conv.0",
        "features.1.conv.0.0",
        "features.1.conv.1",
        "features.1.conv.1.0",
        "classifier",
        "classifier.1",
    ]
    by_path = {row["path"]: row for row in p.rows}
    assert by_path["features.0.0"]["width"] == pytest.approx(0.0)  # agrees to float rounding: an empty bar
    rel = 0.4  # log scale from 1e-7 to 1
    assert by_path["features.1.conv.1.0"]["width"] == pytest.approx(100 * (7 + math.log10(rel)) / 7, abs=0.006)
    first = [row for row in p.rows if "first" in row["classes"]]
    assert [row["path"] for row in first] == ["features.1.conv.1.0"]
    assert "failed" in first[0]["classes"] and "◀ first beyond tolerance" in out.read_text()
    assert "failed" not in by_path["features.0"]["classes"]
    assert p.opened["features.1.conv.1"]  # depth 4: opened because the breach is inside it
    assert not p.opened["features.1.conv.0"]  # depth 4 elsewhere: a click away


def test_debug_cli_writes_its_page(tmp_path, monkeypatch):
    """`edgekit debug --html` through the CLI; the comparison itself (tests/test_debug.py) is replaced by its
    result."""
    from edgekit import cli

    monkeypatch.setattr(cli, "debug_artifact", lambda *a, **k: debug_result())
    page = tmp_path / "d.html"
    proc = run_cli("debug", str(tmp_path / "mobilenetv2_100.onnx"), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "class='tree'" in text and "class='bar'" in text and "features.1.conv.1.0" in text
    assert report_mod.CSS in text  # self-contained: the style inline, no scripts, nothing fetched
    assert "<script" not in text and "src=" not in text and "href=" not in text
