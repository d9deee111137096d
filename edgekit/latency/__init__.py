"""The latency database and the predictor fitted on it: record reports, calibrate, predict."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ..compile import compile as compile_model
from ..compile import get_target
from ..errors import EdgekitError
from ..models import load_model
from ..models.registry import check_trusted
from ..profile import profile
from ..prune import prune
from .db import LatencyDB, default_path, latency_of
from .features import cost_features
from .predictor import MIN_POINTS, Predictor, fit_from_db, points_from_db

__all__ = [
    "LatencyDB",
    "default_path",
    "latency_of",
    "cost_features",
    "Predictor",
    "fit_from_db",
    "record",
    "features_of",
    "calibrate",
    "ensure_predictor",
    "predict",
    "CALIBRATION",
]

# What `calibrate` measures when a (target, device) has too few measurements: models of every family, whole
# and structurally pruned, so the cost of every op kind is seen at several widths. Chosen on
# bench/predictor_measurements.json: fitted on these 12, the other 12 variants there are predicted with a
# median error of 4.7 % (ExecuTorch) and 6.0 % (LiteRT); without a GreedyViG the ExecuTorch error was 16 %.
CALIBRATION = (
    "mobileone_s0",
    "mobilenetv2_100",
    "mobileone_s1",
    "mobilevig_ti",
    "mobilenetv2_140",
    "mobilenetv2_100@0.5",
    "mobileone_s0@0.5",
    "mobileone_s1@0.5",
    "mobilevig_ti@0.3",
    "mobilevig_ti@0.5",
    "mobilevig_ti@0.7",
    "greedyvig_s@0.5",
)


def features_of(reference: str | None, input_size: int) -> dict | None:
    """Cost features of the model a manifest names, or None where it cannot be rebuilt here.

    The reference comes from a file (a report, a manifest): one naming Python code is built only where that code
    is trusted (`--trust-code`, or the user built it in this command); a reference no file could name (too long
    for a path) is none.
    """
    if not reference:
        return None
    try:
        check_trusted(reference, "the report")
        return cost_features(load_model(reference, input_size=input_size).model, input_size)
    except (EdgekitError, OSError, ValueError):
        return None


def record(report: dict, db: LatencyDB, features: dict | None = None, reference: str | None = None) -> int:
    """Store a report; its model's features are computed (to fit the predictor on) where it can be rebuilt."""
    if features is None:
        size = (report["artifact"].get("input_shape") or [0, 0, 0, 0])[-1]
        features = features_of(reference or report["artifact"].get("model"), int(size)) if size else None
    return db.add(report, features)


def materialize(candidate: str, work: Path, input_size: int | None = None) -> str:
    """A model reference for a candidate: `name@0.3` is `name` structurally pruned by magnitude at 30 %."""
    if "@" not in candidate:
        return candidate
    base, ratio = candidate.rsplit("@", 1)
    try:
        r = float(ratio)
    except ValueError:
        raise EdgekitError(f"candidate '{candidate}': give a pruning ratio after @, e.g. mobilevig_ti@0.3") from None

    ckpt = work / f"{base.replace('/', '_').replace(':', '_')}_p{int(round(r * 100))}.pt"
    if not ckpt.exists():
        prune(base, "magnitude", r, structured=True, out=ckpt, input_size=input_size)
    return str(ckpt)


def measure(
    reference: str,
    target: str,
    device: str,
    threads: int | None,
    db: LatencyDB,
    work: Path,
    runs: int = 30,
    warmup: int = 5,
    input_size: int | None = None,
    quantize: str | None = None,
    name: str | None = None,
    verify: bool = False,
) -> tuple[dict, Path]:
    """Compile `reference` for `target`, profile it on `device`, record the report; (report, artifact)."""
    static = quantize is not None and get_target(target).scheme(quantize).calibrated
    # Latency does not depend on what the calibration images show: the bundled digits calibrate a static
    # scheme without a download (accuracy is the selection's other axis, not measured here).
    result = compile_model(
        reference,
        target,
        out=work,
        input_size=input_size,
        quantize=quantize,
        name=name,
        verify=verify,
        calib="digits" if static else None,
        calib_size=32,
        val_samples=32,
    )
    report = profile(result.artifact, runs=runs, warmup=warmup, threads=threads, device=device)
    record(report, db, reference=reference)
    return report, result.artifact


def calibrate(
    target: str,
    device: str,
    threads: int,
    db: LatencyDB,
    input_size: int = 224,
    models: tuple[str, ...] = CALIBRATION,
    progress: Callable[[str], None] | None = None,
    quantization: str | None = None,
) -> Predictor:
    """Measure the calibration set on (target, device) into the database and fit the predictor on it."""
    with tempfile.TemporaryDirectory(prefix="edgekit-calibrate-") as tmp:
        work = Path(tmp)
        for i, cand in enumerate(models):
            if progress:
                progress(f"calibrating {target} on {device}: {cand} ({i + 1}/{len(models)})")
            ref = materialize(cand, work, input_size)
            measure(
                ref,
                target,
                device,
                threads,
                db,
                work,
                input_size=input_size,
                quantize=quantization,
                name=cand.replace("@", "_p"),
            )
    return fit_from_db(db, target, device, threads, quantization)


def ensure_predictor(
    target: str,
    device: str,
    threads: int,
    db: LatencyDB,
    input_size: int | None = None,
    quantization: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Predictor, bool]:
    """The predictor for this key, calibrating first where the database has too few measurements;
    (predictor, whether it calibrated now)."""
    if len(points_from_db(db, target, device, threads, quantization)) >= MIN_POINTS:
        return fit_from_db(db, target, device, threads, quantization), False
    if progress:
        progress(f"measuring the calibration set on {target}/{device} (the database has too few measurements)")
    return calibrate(
        target, device, threads, db, input_size=input_size or 224, progress=progress, quantization=quantization
    ), True


def predict(
    model: str,
    target: str,
    device: str,
    threads: int,
    db: LatencyDB,
    input_size: int | None = None,
    quantization: str | None = None,
) -> dict:
    """Predicted latency of `model` (any model reference) on (target, device, threads), without compiling it."""
    loaded = load_model(model, input_size=input_size)
    size = loaded.card.input_size
    pred = fit_from_db(db, target, device, threads, quantization)
    feats = cost_features(loaded.model, size)
    return {
        "model": model,
        "target": target,
        "device": device,
        "threads": threads,
        "input_size": size,
        "predicted_ms": round(pred.predict(feats), 3),
        "features": feats,
        "predictor": pred.to_dict(),
    }
