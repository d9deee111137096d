"""The latency database and the predictor fitted on it: record reports, calibrate, predict."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..compile import compile as compile_model
from ..compile import get_target
from ..errors import EdgekitError
from ..models import list_models, load_model, model_card
from ..models.registry import check_trusted
from ..profile import profile
from ..profile.devices import find_device
from ..prune import prune
from .db import PRECISION, LatencyDB, default_path, latency_of, precision_of
from .features import cost_features
from .kernel_model import MIN_SAMPLES, KernelModel, fit_kernel_model
from .kernels import Kernel, as_run_by, export_of, kernels_from_rows, kernels_of, kernels_of_program
from .predictor import MIN_POINTS, Predictor, fit_from_db, points_from_db
from .sweep import rows_name_modules

__all__ = [
    "LatencyDB",
    "default_path",
    "latency_of",
    "cost_features",
    "Predictor",
    "fit_from_db",
    "record",
    "features_of",
    "kernel_model_for",
    "kernel_rows",
    "kernels_of",
    "kernels_of_program",
    "export_of",
    "as_run_by",
    "lowered_for",
    "network_family",
    "precision_of",
    "KernelModel",
    "kernel_model_summary",
    "record_kernels",
    "MIN_KERNEL_SAMPLES",
    "calibrate",
    "ensure_predictor",
    "predict",
    "CALIBRATION",
]

# What `calibrate` measures when a (target, device) has too few measurements: models of every family, whole
# and structurally pruned, so the cost of every op kind is seen at several widths. Chosen on
# the 24 variants of an earlier bench/predictor.py run (bench/predictor_measurements.json, in git history before
# issue 18): fitted on these 12, the other 12 variants there are predicted with a
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
    """Store a report; its model's features are computed (to fit the predictor on) where it can be rebuilt, and
    where its per-op rows name modules, its kernels' measured times too (`record_kernels`)."""
    size = (report["artifact"].get("input_shape") or [0, 0, 0, 0])[-1]
    ref = reference or report["artifact"].get("model")
    if features is None:
        features = features_of(ref, int(size)) if size else None
    report_id = db.add(report, features)
    if size:
        record_kernels(report, report_id, db, ref, int(size))
    return report_id


def lowered_for(target: str, quantization: str | None = None, delegate: str | None = None) -> str | None:
    """The target whose lowering `kernels_of` splits a network by (`Target.lowering`: fp32 on the default delegate),
    or None (the export's kernels) for a quantized artifact or another delegate."""
    return target if quantization is None and delegate in (None, "xnnpack") else None


def _rebuilt_kernels(reference: str | None, input_size: int, target: str | None = None) -> list[Kernel] | None:
    """The kernels of the model a report names (as `target` runs them, where given), or None where it cannot be
    rebuilt here (as `features_of`)."""
    if not reference:
        return None
    try:
        check_trusted(reference, "the report")
        return kernels_of(load_model(reference, input_size=input_size).model, input_size, target=target)
    except Exception:  # noqa: BLE001 - a network torch.export cannot trace, or any model that fails to rebuild: the
        return None  # report is recorded all the same, without kernel samples


def record_kernels(report: dict, report_id: int | None, db: LatencyDB, reference: str | None, input_size: int) -> int:
    """Store the kernel samples of a report with per-op rows that name modules, joined to the kernels of its model
    (rebuilt from `reference`), with the network's total (for the kernel model's overhead); the samples stored."""
    ops = report.get("ops") or []
    total = latency_of(report)
    if not total or not any(r.get("module") is not None for r in ops):
        return 0
    runtime = report.get("runtime") or {}
    quant = (report["artifact"].get("quantization") or {}).get("scheme")
    lowered = lowered_for(runtime.get("name", ""), quant, runtime.get("delegate"))
    kernels = _rebuilt_kernels(reference, input_size, lowered)
    if not kernels:
        return 0
    try:
        times = kernels_from_rows(kernels, ops)
    except (KeyError, TypeError, ValueError):  # rows of a shape the join does not read: no samples, the report stays
        return 0
    # a row that covered several kernels of one kind in a module (an attention's two matmuls) is split between them
    # by MACs: the split is a model, the row's total is measured, and without it no matmul would ever be sampled
    samples = [(k.to_dict(), m) for k, m in times.samples(include_shared=True) if m > 0]
    key = (
        report["runtime"]["name"],
        report["device"]["name"],
        int(report["threads"]),
        precision_of(report["artifact"].get("quantization")),
    )
    network = (reference, [k.to_dict() for k in kernels if k.kind != "free"], float(total), report_id)
    db.add_kernel_samples(key, samples, "report", network=network, created=report.get("created") or "")
    return len(samples)


def kernel_rows(target: str, device: str) -> bool:
    """Whether a profile of `target` on `device` gives per-op rows that join to kernels (`kernels_from_rows`): the
    host's ExecuTorch (ETDump, named through the ETRecord) and LiteRT (its own profiler, `litert_profile`). ONNX
    Runtime's rows carry modules too, but their op names (fused ORT kernels) are not joined to kernels yet."""
    return rows_name_modules(target) and find_device(target, device).profile.via == "host"


MIN_KERNEL_SAMPLES = 6  # measured kernels (not free, of some time) a key needs before a kernel model is fitted


def kernel_model_for(
    db: LatencyDB, target: str, device: str, threads: int, precision: str = PRECISION
) -> KernelModel | None:
    """The kernel-level model of (target, device, threads, precision), fitted on the database's kernel samples (the
    sweep's and the reports' per-op rows) and whole-network totals; None where there are fewer than
    `MIN_KERNEL_SAMPLES` samples or no kind has `MIN_SAMPLES`. Recomputed on every call, never cached: the fit is
    small non-negative least-squares problems, one set per network for the overhead's held-out spread (0.1 s for 12
    networks, 740 of their kernels and the 198 of a default sweep here), so it always reflects what the database
    holds now."""
    rows = db.kernel_samples(target, device, threads, precision)
    samples = [(Kernel.from_dict(r["kernel"]), float(r["ms"]), r["network_id"]) for r in rows]
    samples = [s for s in samples if s[0].kind != "free" and s[1] > 0]
    per_kind: dict[str, int] = {}
    for k, _, _ in samples:
        per_kind[k.kind] = per_kind.get(k.kind, 0) + 1
    if len(samples) < MIN_KERNEL_SAMPLES or max(per_kind.values(), default=0) < MIN_SAMPLES:
        return None
    stored = db.kernel_networks(target, device, threads, precision)
    networks = [([Kernel.from_dict(k) for k in n["kernels"]], float(n["total_ms"]), n["id"]) for n in stored]
    families = {n["id"]: network_family(n["name"]) or n["id"] for n in stored}
    return fit_kernel_model(
        samples,
        networks,
        target=target,
        device=device,
        threads=threads,
        precision=precision,
        family=lambda g: families.get(g, g),
    )


def network_family(reference: str | None) -> str | None:
    """The family of a measured network, for the kernel model's spread (held out a family at a time, as a new
    architecture will be predicted): a zoo model's (MobileNetV2 at widths 1.0 and 1.4 are one), and the same for a
    candidate `select` pruned from it (`mobilevig_ti_p30.pt`); any other reference is a family of its own."""
    if not reference:
        return None
    stem = Path(reference).stem if reference.endswith((".pt", ".pth")) else reference
    stem = re.sub(r"_p\d+$", "", stem)
    return model_card(stem).family if stem in list_models() else reference


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
    per_op: bool = False,
) -> tuple[dict, Path]:
    """Compile `reference` for `target`, profile it on `device` (with per-op rows where asked), record the report
    (and its kernel samples: `record`); (report, artifact)."""
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
    report = profile(result.artifact, runs=runs, warmup=warmup, threads=threads, device=device, per_op=per_op)
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
    """Measure the calibration set on (target, device) into the database and fit the predictor on it. Where the
    target's per-op rows carry module paths on this device (`kernel_rows`), each network is profiled per op too, so
    the database gets its kernels' times and totals: what the kernel model (`kernel_model_for`) is fitted on."""
    per_op = kernel_rows(target, device)
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
                per_op=per_op,
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
    """Predicted latency of `model` (any model reference) on (target, device, threads), without compiling it.

    With a kernel model for the key (`kernel_model_for`: a kernel sweep or per-op reports in the database), the
    prediction is the kernels' sum with its interval (`low_ms`, `high_ms` at `level`), the kernel table behind it
    and the kinds the fit never saw (`method` "kernels"); else the per-feature predictor's (`method` "features",
    no interval)."""
    loaded = load_model(model, input_size=input_size)
    size = loaded.card.input_size
    head = {"model": model, "target": target, "device": device, "threads": threads, "input_size": size}
    km = kernel_model_for(db, target, device, threads, precision_of(quantization))
    if km is not None:
        p = km.predict(kernels_of(loaded.model, size, target=lowered_for(target, quantization)))
        return {
            **head,
            "method": "kernels",
            "predicted_ms": round(p.ms, 3),
            "low_ms": round(p.low, 3),
            "high_ms": round(p.high, 3),
            "level": p.level,
            "unseen_kinds": p.unseen_kinds,
            "unseen_ops": p.unseen_ops,
            "kernels_ms": round(p.kernels_ms, 4),
            "overhead_ms": round(p.overhead_ms, 4),
            "kernels": [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()} for row in p.table],
            "kernel_model": kernel_model_summary(km),
        }
    pred = fit_from_db(db, target, device, threads, quantization)
    feats = cost_features(loaded.model, size)
    return {
        **head,
        "method": "features",
        "predicted_ms": round(pred.predict(feats), 3),
        "low_ms": None,
        "high_ms": None,
        "features": feats,
        "predictor": pred.to_dict(),
    }


def kernel_model_summary(km: KernelModel) -> dict:
    """What a kernel model was fitted on: samples per kind (own fits), the pooled fallbacks, the overhead."""
    return {
        "precision": km.precision,
        "kinds": {k: f.samples for k, f in sorted(km.kinds.items())},
        "fallback": {k: f.samples for k, f in sorted(km.fallback.items())},
        "overhead": km.overhead,
        "level": km.level,
    }
