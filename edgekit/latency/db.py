"""The latency database: every latency report, in one SQLite file (embedded, no server).

Reports are keyed by artifact sha256, target, device and threads; each keeps its full JSON. A report
whose artifact was compiled from a model edgekit can rebuild also keeps that model's cost features,
which is what the predictor is fitted on. A report with per-op rows that carry module paths also keeps
its module tree, one row per module (`module_times`).

Kernel measurements (what the kernel-level model is fitted on) live beside the reports: `kernel_samples`, one row
per measured kernel `(target, device, threads, precision, kernel JSON, ms)`, from a kernel sweep (`sweep.py`) or
from a report's per-op rows joined to its model's kernels; and `kernel_networks`, the whole-network totals (with
their kernels) that fit the per-network overhead. Both tables are created in a database written before them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..compile.attribution import module_tree, tree_rows
from ..errors import EdgekitError

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    artifact_name TEXT,
    target TEXT NOT NULL,
    device TEXT NOT NULL,
    device_model TEXT,
    threads INTEGER NOT NULL,
    model TEXT,
    quantization TEXT,
    median_ms REAL,
    mean_ms REAL,
    p90_ms REAL,
    min_ms REAL,
    runs INTEGER,
    features TEXT,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_key ON reports (artifact_sha256, target, device, threads);
CREATE TABLE IF NOT EXISTS module_times (
    report_id INTEGER NOT NULL REFERENCES reports (id),
    module TEXT NOT NULL,
    ms REAL NOT NULL,
    self_ms REAL,
    share REAL,
    depth INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS module_times_report ON module_times (report_id);
CREATE TABLE IF NOT EXISTS kernel_networks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id INTEGER REFERENCES reports (id),
    target TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER NOT NULL,
    precision TEXT NOT NULL,
    name TEXT,
    total_ms REAL NOT NULL,
    kernels TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kernel_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    target TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER NOT NULL,
    precision TEXT NOT NULL,
    source TEXT NOT NULL,
    network_id INTEGER REFERENCES kernel_networks (id),
    kind TEXT NOT NULL,
    kernel TEXT NOT NULL,
    ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS kernel_samples_key ON kernel_samples (target, device, threads, precision);
"""
COLUMNS = (
    "id",
    "created",
    "artifact_sha256",
    "artifact_name",
    "target",
    "device",
    "device_model",
    "threads",
    "model",
    "quantization",
    "median_ms",
    "mean_ms",
    "p90_ms",
    "min_ms",
    "runs",
)
MODULE_COLUMNS = ("module", "ms", "self_ms", "share", "depth")  # module_times' own, in the tree's order (rowid)
KERNEL_COLUMNS = (
    "id",
    "created",
    "target",
    "device",
    "threads",
    "precision",
    "source",
    "network_id",
    "kind",
    "kernel",
    "ms",
)
NETWORK_COLUMNS = ("id", "report_id", "target", "device", "threads", "precision", "name", "total_ms", "kernels")
PRECISION = "fp32"  # the precision key of float artifacts (a quantized one's is its scheme)


def precision_of(quantization: str | None) -> str:
    """The kernel tables' precision key: the quantization scheme, or fp32 for a float artifact."""
    return quantization or PRECISION


def default_path() -> Path:
    """$EDGEKIT_DB, else ~/.cache/edgekit/latency.sqlite."""
    env = os.environ.get("EDGEKIT_DB")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekit" / "latency.sqlite"


def latency_of(row: dict) -> float | None:
    """A report's latency: its median, or its mean where the tool gave a mean alone."""
    return row.get("median_ms") if row.get("median_ms") is not None else row.get("mean_ms")


# SQLite's result codes that mean the file is not a (whole) database, as opposed to one that cannot be reached
# now (locked, read-only, no such folder): the first is for moving aside, the second for trying again or elsewhere.
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_ERROR", "SQLITE_MISMATCH", "SQLITE_FORMAT", "SQLITE_SCHEMA"}
_BUSY = {"SQLITE_BUSY", "SQLITE_LOCKED"}


def _finite(value):
    """`value` with every NaN and infinity replaced by None (rows stored before reports were checked for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _report_json(report: dict) -> str:
    try:
        return json.dumps(report, allow_nan=False)
    except ValueError:  # validated reports are finite; this keeps a NaN out of the database whatever the caller
        raise EdgekitError("the report holds NaN or an infinity, which no latency is; nothing was recorded") from None


class LatencyDB:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgekitError(
                f"latency database '{self.path}' cannot be opened ({e.strerror or e}); give another with --db"
            ) from None
        if self.path.exists() and not self.path.is_file():
            raise EdgekitError(f"latency database '{self.path}' is not a file; give a file with --db")
        with self._guard():
            self.conn = sqlite3.connect(self.path)
        try:
            with self._guard():
                self.conn.executescript(SCHEMA)
                for table, columns in (
                    ("reports", (*COLUMNS, "features", "report")),
                    ("module_times", MODULE_COLUMNS),
                    ("kernel_samples", KERNEL_COLUMNS),
                    ("kernel_networks", NETWORK_COLUMNS),
                ):
                    have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                    missing = [c for c in columns if c not in have]
                    if missing:
                        raise sqlite3.DatabaseError(f"its {table} table has no column {missing[0]}; not edgekit's")
        except BaseException:
            self.conn.close()
            raise
        self.conn.row_factory = sqlite3.Row

    def damaged(self, reason: object) -> EdgekitError:
        bad = shlex.quote(str(self.path))
        return EdgekitError(
            f"latency database '{self.path}' is damaged ({reason}); move it aside "
            f"(mv {bad} {shlex.quote(str(self.path) + '.bad')}) and run again"
        )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite's errors as one EdgekitError: damaged (move it aside), busy (try again), or out of reach."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            code = getattr(e, "sqlite_errorname", None)
            if isinstance(e, sqlite3.OperationalError) and code in _BUSY:
                raise EdgekitError(
                    f"latency database '{self.path}' is in use by another process ({e}); run again when it is done"
                ) from None
            if code in _DAMAGED or (code is None and not isinstance(e, sqlite3.OperationalError)):
                raise self.damaged(e) from None
            raise EdgekitError(
                f"latency database '{self.path}' cannot be opened ({e}); give another with --db"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a stored report that is no longer JSON
            raise self.damaged(f"a stored report is not JSON: {e}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> LatencyDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, report: dict, features: dict | None = None) -> int:
        """Store a (validated) report, and its module tree (the report's, else its per-op rows'); returns its id."""
        art = report["artifact"]
        row = (
            report.get("created") or "",
            art["sha256"],
            art.get("name"),
            report["runtime"]["name"],
            report["device"]["name"],
            report["device"].get("model"),
            int(report["threads"]),
            art.get("model"),
            art.get("quantization"),
            report.get("median_ms"),
            report.get("mean_ms"),
            report.get("p90_ms"),
            report.get("min_ms"),
            int(report["runs"]),
            json.dumps(_finite(features), allow_nan=False) if features else None,
            _report_json(report),
        )
        with self._guard(), self.conn:
            cur = self.conn.execute(
                "INSERT INTO reports (created, artifact_sha256, artifact_name, target, device, device_model, threads, "
                "model, quantization, median_ms, mean_ms, p90_ms, min_ms, runs, features, report) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            assert cur.lastrowid is not None  # an INSERT sets it
            report_id = int(cur.lastrowid)
            tree = report.get("modules") or module_tree(report.get("ops") or [])
            self.conn.executemany(
                "INSERT INTO module_times (report_id, module, ms, self_ms, share, depth) VALUES (?,?,?,?,?,?)",
                [
                    (report_id, n["module"], n["ms"], n.get("self_ms"), n.get("share"), depth)
                    for depth, n in tree_rows(tree)
                ],
            )
        return report_id

    # -- kernel measurements ---------------------------------------------------------------------------------------

    def add_kernel_samples(
        self,
        key: tuple[str, str, int, str],
        samples: list[tuple[dict, float]],
        source: str,
        network: tuple[str | None, list[dict], float, int | None] | None = None,
        created: str = "",
    ) -> int | None:
        """Store measured kernels for `key` = (target, device, threads, precision): `samples` are (Kernel.to_dict(),
        ms); `source` says where they come from (`sweep`, `report`). With `network` = (name, every kernel of it as
        dicts, its total ms, its report id), the network's total is stored too (`kernel_networks`, for the overhead
        fit) and the samples are grouped under it; returns that network's id (None without one)."""
        target, device, threads, precision = key
        with self._guard(), self.conn:
            network_id = None
            if network is not None:
                name, kernels, total, report_id = network
                cur = self.conn.execute(
                    "INSERT INTO kernel_networks (report_id, target, device, threads, precision, name, total_ms, "
                    "kernels) VALUES (?,?,?,?,?,?,?,?)",
                    (report_id, target, device, int(threads), precision, name, float(total), json.dumps(kernels)),
                )
                network_id = cur.lastrowid
            self.conn.executemany(
                "INSERT INTO kernel_samples (created, target, device, threads, precision, source, network_id, kind, "
                "kernel, ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (created, target, device, int(threads), precision, source, network_id, k["kind"], json.dumps(k), ms)
                    for k, ms in samples
                    if math.isfinite(ms)
                ],
            )
        return network_id

    def kernel_samples(self, target: str, device: str, threads: int, precision: str = PRECISION) -> list[dict]:
        """Every measured kernel of a key: `{kernel (dict), ms, source, network_id}`, in the order stored."""
        with self._guard():
            rows = self.conn.execute(
                "SELECT kernel, ms, source, network_id FROM kernel_samples WHERE target = ? AND device = ? AND "
                "threads = ? AND precision = ? ORDER BY id",
                (target, device, int(threads), precision),
            ).fetchall()
            return [{**dict(r), "kernel": json.loads(r["kernel"])} for r in rows]

    def kernel_networks(self, target: str, device: str, threads: int, precision: str = PRECISION) -> list[dict]:
        """Whole networks measured for a key: `{id, name, total_ms, kernels (dicts), report_id}`."""
        with self._guard():
            rows = self.conn.execute(
                "SELECT id, name, total_ms, kernels, report_id FROM kernel_networks WHERE target = ? AND device = ? "
                "AND threads = ? AND precision = ? ORDER BY id",
                (target, device, int(threads), precision),
            ).fetchall()
            return [{**dict(r), "kernels": json.loads(r["kernels"])} for r in rows]

    def kernel_counts(self, target: str | None = None, device: str | None = None) -> list[dict]:
        """Measured kernels per (target, device, threads, precision, kind, source)."""
        where, args = [], []
        for col, val in (("target", target), ("device", device)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = (
            "SELECT target, device, threads, precision, kind, source, COUNT(*) AS n FROM kernel_samples"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " GROUP BY target, device, threads, precision, kind, source ORDER BY target, device, threads, kind"
        )
        with self._guard():
            return [dict(r) for r in self.conn.execute(sql, args)]

    def module_times(
        self,
        report_id: int | None = None,
        *,
        sha256: str | None = None,
        target: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        max_depth: int | None = None,
    ) -> list[dict]:
        """One report's module tree, `{module, ms, self_ms, share, depth}` per module (each parent before its children,
        largest first; the model is module "" at depth 0): the report `report_id`, or the latest one of an artifact on
        a target, device and thread count. Empty where the report has no tree (no per-op rows with module paths,
        recorded before the database kept them) or there is no such report."""
        if report_id is None:
            if sha256 is None or target is None or device is None or threads is None:
                raise EdgekitError(
                    "module times need a report id, or the artifact's sha256, target, device and threads"
                )
            found = self.latest(sha256, target, device, threads)
            if found is None:
                return []
            report_id = found["id"]
        sql = f"SELECT {', '.join(MODULE_COLUMNS)} FROM module_times WHERE report_id = ?"
        args: list = [report_id]
        if max_depth is not None:
            sql += " AND depth <= ?"
            args.append(max_depth)
        with self._guard():
            return [dict(r) for r in self.conn.execute(sql + " ORDER BY rowid", args)]

    def rows(
        self,
        target: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        sha256: str | None = None,
        with_report: bool = False,
    ) -> list[dict]:
        where, args = [], []
        for col, val in (("target", target), ("device", device), ("threads", threads), ("artifact_sha256", sha256)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        cols = ", ".join(COLUMNS + ("features",) + (("report",) if with_report else ()))
        sql = f"SELECT {cols} FROM reports" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        out = []
        with self._guard():
            for r in self.conn.execute(sql, args):
                d = dict(r)
                d["features"] = json.loads(d["features"]) if d["features"] else None
                if with_report:
                    d["report"] = json.loads(d["report"])
                out.append(d)
        return out

    def latest(self, sha256: str, target: str, device: str, threads: int) -> dict | None:
        found = self.rows(target, device, threads, sha256)
        return found[-1] if found else None

    def export(self, fmt: str = "json", **filters) -> str:
        if fmt == "json":  # valid JSON always: a NaN stored before reports were checked is null
            reports = [_finite(r["report"]) for r in self.rows(with_report=True, **filters)]
            return json.dumps(reports, indent=2, allow_nan=False) + "\n"
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(COLUMNS)
            for r in self.rows(**filters):
                w.writerow([r[c] for c in COLUMNS])
            return buf.getvalue()
        raise EdgekitError(f"unknown export format '{fmt}'; choose json or csv")
