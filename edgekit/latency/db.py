"""The latency database: every latency report, in one SQLite file (embedded, no server).

Reports are keyed by artifact sha256, target, device and threads; each keeps its full JSON. A report
whose artifact was compiled from a model edgekit can rebuild also keeps that model's cost features,
which is what the predictor is fitted on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from pathlib import Path

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


class LatencyDB:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path)
            self.conn.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as e:
            raise EdgekitError(
                f"latency database '{self.path}' cannot be opened ({e}); give another with --db"
            ) from None
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> LatencyDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, report: dict, features: dict | None = None) -> int:
        """Store a (validated) report; returns its id."""
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
            json.dumps(features) if features else None,
            json.dumps(report),
        )
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO reports (created, artifact_sha256, artifact_name, target, device, device_model, threads, "
                "model, quantization, median_ms, mean_ms, p90_ms, min_ms, runs, features, report) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
        assert cur.lastrowid is not None  # an INSERT sets it
        return int(cur.lastrowid)

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
        if fmt == "json":
            return json.dumps([r["report"] for r in self.rows(with_report=True, **filters)], indent=2) + "\n"
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(COLUMNS)
            for r in self.rows(**filters):
                w.writerow([r[c] for c in COLUMNS])
            return buf.getvalue()
        raise EdgekitError(f"unknown export format '{fmt}'; choose json or csv")
