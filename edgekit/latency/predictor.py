"""Latency predictor per (target, device, threads, quantization): a cost per op kind, fitted on measurements.

latency = intercept + sum over features of cost * feature, where the features (`features.py`) are the
MACs of each kind of compute op, the elements written by memory-bound ops, the bytes moved and the op
count. Costs are fitted by non-negative least squares on relative error (a 1 ms model counts as much as a
20 ms one), with a light ridge so that a handful of measurements cannot blow one cost up. A pruned or
other-width network is predicted from its features alone: no compile, no run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import EdgekitError
from .db import latency_of
from .features import FEATURES

MIN_POINTS = 6
RIDGE = 1e-3


@dataclass
class Predictor:
    target: str
    device: str
    threads: int
    quantization: str | None
    costs: dict[str, float]  # ms per unit of each feature
    intercept: float
    points: int
    loo: dict = field(default_factory=dict)  # leave-one-out quality on the fitting set

    def predict(self, features: dict[str, float]) -> float:
        return self.intercept + sum(self.costs[k] * float(features.get(k, 0.0)) for k in FEATURES)

    def to_dict(self) -> dict:
        return asdict(self)


def _solve(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of relative error, columns scaled to unit mean, ridge-regularised."""
    from scipy.optimize import nnls

    A = np.hstack([X, np.ones((len(X), 1))]) / y[:, None]
    b = np.ones(len(y))
    scale = np.abs(A).mean(axis=0)
    scale[scale == 0] = 1.0
    A = A / scale
    n = A.shape[1]
    A = np.vstack([A, np.sqrt(RIDGE * len(y)) * np.eye(n)])
    b = np.concatenate([b, np.zeros(n)])
    w, _ = nnls(A, b, maxiter=50 * n)
    return w / scale


def _matrix(points: list[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([[float(f.get(k, 0.0)) for k in FEATURES] for f, _ in points])
    y = np.array([float(ms) for _, ms in points])
    return X, y


def fit(
    points: list[tuple[dict, float]],
    target: str,
    device: str,
    threads: int,
    quantization: str | None = None,
    with_loo: bool = True,
) -> Predictor:
    """Fit on (features, measured ms) pairs."""
    if len(points) < MIN_POINTS:
        raise EdgekitError(
            f"{len(points)} measured model(s) for {target} on {device} ({threads} threads); the predictor needs "
            f"at least {MIN_POINTS}: run `edgekit latency calibrate --target {target} --device {device}`"
        )
    X, y = _matrix(points)
    w = _solve(X, y)
    pred = Predictor(
        target,
        device,
        threads,
        quantization,
        {k: float(c) for k, c in zip(FEATURES, w[:-1])},
        float(w[-1]),
        len(points),
    )
    if with_loo:
        pred.loo = quality(y, leave_one_out(points))
    return pred


def leave_one_out(points: list[tuple[dict, float]]) -> np.ndarray:
    """Each point predicted by a fit on all the others."""
    X, y = _matrix(points)
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = _solve(X[keep], y[keep])
        out[i] = X[i] @ w[:-1] + w[-1]
    return out


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def quality(measured, predicted) -> dict:
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    ape = np.abs(predicted - measured) / measured
    return {
        "points": int(len(measured)),
        "spearman": round(spearman(measured, predicted), 4),
        "mdape": round(float(np.median(ape)), 4),
        "max_ape": round(float(ape.max()), 4),
    }


def points_from_db(db, target: str, device: str, threads: int, quantization: str | None = None):
    """(features, latency) of the latest report of every artifact measured for this key that has features."""
    latest: dict[str, dict] = {}
    for row in db.rows(target, device, threads):
        if row["features"] and row["quantization"] == quantization and latency_of(row):
            latest[row["artifact_sha256"]] = row
    return [(r["features"], latency_of(r)) for r in latest.values()]


def fit_from_db(db, target: str, device: str, threads: int, quantization: str | None = None) -> Predictor:
    return fit(points_from_db(db, target, device, threads, quantization), target, device, threads, quantization)
