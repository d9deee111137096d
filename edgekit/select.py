"""Choose the most accurate model that fits a latency budget on a (target, device), and prove it by measuring.

Candidates are model references: zoo names, user networks, edgekit checkpoints, and `name@R` for `name`
structurally pruned by magnitude at ratio R. Each gets a predicted latency (from the fitted predictor,
which `select` calibrates first when the database has too few measurements) and an accuracy (a checkpoint's
own measured accuracy, else the paper's top-1 for an unpruned zoo model, else unknown).

With a kernel-level model for the key (`latency calibrate --kernels`, or per-op reports in the database), every
prediction carries an interval: candidates whose interval crosses the budget are measured (the measurement says on
which side they are), those wholly under it are taken as fitting, those wholly over as not; the fitting ones are
ranked by accuracy and the best confirmed by measurement. Without one, the per-feature predictor is used and a
fixed margin (its own leave-one-out error) decides which candidates over the budget are measured too.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .compile import get_target
from .errors import EdgekitError
from .io import atomic_path, write_json
from .latency import (
    KernelModel,
    LatencyDB,
    as_run_by,
    cost_features,
    ensure_predictor,
    export_of,
    kernel_model_for,
    kernel_model_summary,
    kernels_of_program,
    latency_of,
    lowered_for,
    materialize,
    measure,
    precision_of,
)
from .models import (
    checkpoint_out,
    count_macs,
    count_params,
    list_models,
    load_model,
    model_card,
    save_checkpoint,
    zoo_rows,
)
from .models.surgery import apply_plan
from .models.weights import read_checkpoint
from .prune import channel_groups, get_method, make_plan, method_names


@dataclass
class Candidate:
    name: str
    reference: str
    accuracy: float | None  # top-1, percent
    accuracy_source: str
    predicted_ms: float
    measured_ms: float | None = None
    artifact: str | None = None
    status: str = "predicted"
    low_ms: float | None = None  # the kernel model's interval (None with the per-feature predictor)
    high_ms: float | None = None
    unseen_kinds: list[str] | None = None

    @property
    def latency_ms(self) -> float:
        return self.measured_ms if self.measured_ms is not None else self.predicted_ms


def default_candidates() -> list[str]:
    """Every zoo model with a published top-1."""
    return [r["name"] for r in zoo_rows() if r["paper"]["top1"] is not None]


def accuracy_of(candidate: str, reference: str) -> tuple[float | None, str]:
    """A checkpoint's measured validation accuracy, else the paper's top-1 of an unpruned zoo model."""
    if Path(reference).suffix in (".pt", ".pth", ".ckpt") and "@" not in candidate:
        prov = read_checkpoint(reference).get("provenance") or {}
        history = prov.get("history") or [{}]
        acc = history[-1].get("val_accuracy")
        if acc is not None:
            return round(100 * float(acc), 2), f"measured on {prov.get('data', {}).get('spec', 'its data')}"
        return None, "unknown (the checkpoint carries no measured accuracy)"
    if candidate in list_models():
        top1 = model_card(candidate).paper.top1
        if top1 is not None:
            return float(top1), "paper (ImageNet-1K top-1)"
    if "@" in candidate:
        return None, "unknown (pruned, not fine-tuned or measured)"
    return None, "unknown"


def _latency(report: dict) -> float:
    """The latency of a report edgekit measured (its median)."""
    ms = latency_of(report)
    assert ms is not None, "a report measured here has its median"
    return ms


def _with_accuracy(cands: list[Candidate]) -> list[tuple[Candidate, float]]:
    """The candidates whose accuracy is known, each with it."""
    return [(c, c.accuracy) for c in cands if c.accuracy is not None]


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other is both faster and more accurate than."""
    known = sorted(_with_accuracy(cands), key=lambda ca: (ca[0].latency_ms, -ca[1]))
    front, best = [], float("-inf")
    for c, accuracy in known:
        if accuracy > best:
            front.append(c)
            best = accuracy
    return front


def check_budget(budget_ms: float) -> None:
    if not math.isfinite(budget_ms) or budget_ms <= 0:
        raise EdgekitError(f"--budget-ms {budget_ms}: give a positive latency budget in milliseconds")


def plot_pareto(cands: list[Candidate], budget_ms: float, chosen: Candidate | None, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    known = _with_accuracy(cands)
    for measured, marker in ((False, "o"), (True, "s")):
        pts = [(c, accuracy) for c, accuracy in known if (c.measured_ms is not None) == measured]
        if pts:
            ax.scatter(
                [c.latency_ms for c, _ in pts],
                [accuracy for _, accuracy in pts],
                marker=marker,
                s=30,
                facecolors="none" if not measured else "C0",
                edgecolors="C0",
                label="measured" if measured else "predicted",
            )
    for c, accuracy in known:
        ax.annotate(c.name, (c.latency_ms, accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = _with_accuracy(pareto_front(cands))
    if front:
        ax.step(
            [c.latency_ms for c, _ in front],
            [accuracy for _, accuracy in front],
            where="post",
            color="C1",
            lw=1,
            label="Pareto front",
        )
    ax.axvline(budget_ms, color="C3", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    if chosen is not None and chosen.accuracy is not None:
        ax.scatter(
            [chosen.latency_ms],
            [chosen.accuracy],
            marker="*",
            s=200,
            color="C2",
            zorder=5,
            label=f"chosen: {chosen.name}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def select(
    target: str,
    device: str,
    budget_ms: float,
    *,
    candidates: list[str] | None = None,
    threads: int,
    db: LatencyDB,
    out: str | Path = "out/select",
    input_size: int | None = None,
    quantize: str | None = None,
    max_confirm: int = 4,
    max_measure: int = 8,
    runs: int = 30,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Rank `candidates` under `budget_ms`, confirm the winner by measurement; write selection.json and pareto.png.

    With `quantize`, every candidate is compiled with that scheme and timed as such (the predictor is
    fitted on artifacts of the same scheme); its accuracy stays the float model's, marked as such.
    """
    check_budget(budget_ms)
    say = progress or (lambda m: None)
    out = Path(out)
    work = out / "candidates"
    work.mkdir(parents=True, exist_ok=True)
    names = candidates or default_candidates()
    if quantize is not None:
        get_target(target).scheme(quantize)
    kernel_model = kernel_model_for(db, target, device, threads, precision_of(quantize))
    predictor, calibrated = None, False
    if kernel_model is None:
        predictor, calibrated = ensure_predictor(target, device, threads, db, input_size, quantize, say)
        # a calibration just measured profiles the networks per op where the target's rows join to kernels
        # (ExecuTorch on the host): the kernel model, with its intervals, takes over from the per-feature predictor
        kernel_model = kernel_model_for(db, target, device, threads, precision_of(quantize))
    cands: list[Candidate] = []
    for name in names:
        say(f"predicting {name}")
        ref = materialize(name, work, input_size)
        acc, source = accuracy_of(name, ref)
        if quantize and acc is not None:
            source += f"; the float model's: the {quantize} drop was not measured"
        loaded = load_model(ref, input_size=input_size)
        size = loaded.card.input_size
        if kernel_model is not None:
            ep = export_of(loaded.model, size)
            kernels = kernels_of_program(ep)
            p = kernel_model.predict(kernels)
            runtime = lowered_for(target, quantize)
            if runtime is not None and p.low <= budget_ms:
                # near or under the budget: as the runtime runs them (XNNPACK's partition, 3-60 s a network). The
                # runtime only adds copies and slower portable kernels, so a network whose interval is wholly over
                # the budget on the export's kernels is over it on the runtime's too: GreedyViG-B is not lowered.
                p = kernel_model.predict(as_run_by(kernels, ep, runtime))
            cand = Candidate(name, ref, acc, source, round(p.ms, 3), low_ms=round(p.low, 3), high_ms=round(p.high, 3))
            cand.unseen_kinds = p.unseen_kinds
        else:
            assert predictor is not None
            cand = Candidate(name, ref, acc, source, round(predictor.predict(cost_features(loaded.model, size)), 3))
        cands.append(cand)

    def confirm(c: Candidate) -> None:
        say(f"measuring {c.name} on {device}")
        report, artifact = measure(
            c.reference,
            target,
            device,
            threads,
            db,
            work / "artifacts",
            runs=runs,
            input_size=input_size,
            name=c.name.replace("@", "_p"),
            verify=True,
            quantize=quantize,
        )
        c.measured_ms, c.artifact = round(_latency(report), 3), str(artifact)

    def by_accuracy(c: Candidate) -> tuple:
        return (c.accuracy is None, -(c.accuracy or 0.0), c.predicted_ms)

    chosen = None
    crossing: list[Candidate] = []
    slack: float | None = None
    if kernel_model is not None:
        # The interval decides: a candidate whose interval crosses the budget is measured, whatever its accuracy
        # (the most accurate first, at most `max_measure`); one wholly under is taken as fitting until measured.
        crossing = sorted(
            (c for c in cands if c.low_ms is not None and c.high_ms is not None and c.low_ms <= budget_ms < c.high_ms),
            key=by_accuracy,
        )[:max_measure]
        for c in crossing:
            confirm(c)
            assert c.measured_ms is not None
            c.status = "measured (interval crosses the budget): " + (
                "within budget" if c.measured_ms <= budget_ms else "over budget"
            )
        ranked = sorted(
            (
                c
                for c in cands
                if (c.measured_ms is not None and c.measured_ms <= budget_ms)
                or (c.measured_ms is None and c.high_ms is not None and c.high_ms <= budget_ms)
            ),
            key=by_accuracy,
        )
    else:
        # A prediction is as good as the predictor's own leave-one-out error: candidates predicted within that
        # margin over the budget are measured too, most accurate first, and the measurement decides.
        assert predictor is not None
        slack = min(0.25, max(0.05, predictor.loo.get("mdape", 0.1)))
        ranked = sorted((c for c in cands if c.predicted_ms <= budget_ms * (1 + slack)), key=by_accuracy)
    tried: list[Candidate] = []
    for c in ranked[:max_confirm]:
        if c.measured_ms is None:
            say(f"confirming {c.name}: compiling and measuring on {device}")
            confirm(c)
        tried.append(c)
        assert c.measured_ms is not None
        if c.measured_ms <= budget_ms:
            c.status = "chosen"
            chosen = c
            break
        c.status = "over budget when measured"
    for c in cands:
        if c.status == "predicted" and c.low_ms is not None and c.low_ms > budget_ms:
            c.status = "over budget (its whole interval)"
        elif c.status == "predicted" and c.predicted_ms > budget_ms:
            c.status = "over budget (predicted)"
    title = f"{target} on {device}, {threads} threads, budget {budget_ms:g} ms"
    png = plot_pareto(cands, budget_ms, chosen, out / "pareto.png", title)
    result = {
        "target": target,
        "device": device,
        "threads": threads,
        "budget_ms": budget_ms,
        "quantization": quantize,
        "chosen": None
        if chosen is None
        else {
            "model": chosen.name,
            "reference": chosen.reference,
            "artifact": chosen.artifact,
            "manifest": f"{chosen.artifact}.json",
            "measured_ms": chosen.measured_ms,
            "predicted_ms": chosen.predicted_ms,
            "accuracy": chosen.accuracy,
            "accuracy_source": chosen.accuracy_source,
        },
        "candidates": [asdict(c) for c in sorted(cands, key=lambda c: c.latency_ms)],
        "pareto_front": [c.name for c in pareto_front(cands)],
        "pareto_png": str(png),
        "calibrated_now": calibrated,
    }
    if kernel_model is not None:
        result["method"] = "kernels"
        result["measured_because_interval_crosses_budget"] = [
            {k: getattr(c, k) for k in ("name", "predicted_ms", "low_ms", "high_ms", "measured_ms")} for c in crossing
        ]
        result["kernel_model"] = kernel_model_summary(kernel_model)
    else:
        assert predictor is not None and slack is not None
        result["method"] = "features"
        result["prediction_margin"] = round(slack, 4)
        result["predictor"] = predictor.to_dict()
    write_json(out / "selection.json", result)
    if chosen is None:
        said = ", ".join(f"{c.name} {c.measured_ms:.2f} ms" for c in [*crossing, *tried] if c.measured_ms is not None)
        said = said or "none predicted to fit"
        raise EdgekitError(
            f"no candidate was measured within {budget_ms:g} ms on {target}/{device} ({said}); "
            f"raise the budget or add smaller candidates (e.g. name@0.5 for a pruned one)"
        )
    return result


# -- latency-aware pruning ------------------------------------------------------------------------------

STAGES = 4  # channel groups bucketed by depth: the stem side to the head side


def _keep_per_group(
    scores: dict, groups, ratios: dict[int, float], min_keep: float = 0.1, tile: int | None = None
) -> dict[int, list[int]]:
    """Each group drops its own lowest-scoring `ratios[group]` of channels (keeping at least `min_keep`); with a
    `tile`, the count kept is rounded up to a multiple of it (where the group has that many): the runtime computes
    whole tiles of output channels, so the channels up to the tile cost (almost) nothing and are kept."""
    keep = {}
    for g in groups:
        n = max(max(1, int(round(min_keep * g.size))), g.size - int(ratios[g.id] * g.size))
        if tile and n % tile and -(-n // tile) * tile <= g.size:
            n = -(-n // tile) * tile
        keep[g.id] = scores[g.id].topk(n).indices.sort().values.tolist()
    return keep


CLIFF = 0.2  # a share of the GEMM work charged at the padded channel count over this: padded channels cost time


def channel_tile(model: KernelModel | None) -> int | None:
    """The GEMM tile a kernel model says channel counts should round to: the largest of 16 and 8 at which the fit
    charges a share of the GEMM kinds' work (pwconv, conv, linear) to the padded channel count
    (`KernelModel.padding_share`), i.e. where a count just past a multiple runs about as slow as the next multiple
    (a cliff); None without a model or a cliff."""
    if model is None:
        return None
    for tile in (16, 8):
        if any(model.padding_share(kind, tile) > CLIFF for kind in ("pwconv", "conv", "linear")):
            return tile
    return None


def prune_to_budget(
    model: str,
    target: str,
    device: str,
    budget_ms: float,
    *,
    threads: int,
    db: LatencyDB,
    out: str | Path,
    method: str = "magnitude",
    input_size: int | None = None,
    confirm: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Prune `model` structurally with per-stage ratios chosen so its predicted latency fits `budget_ms`.

    Stages are the channel groups bucketed by depth into four. Each stage's latency sensitivity (ms saved
    by pruning it alone by 30 %) sets its share; one scale is searched so the predicted latency meets
    the budget; the result is compiled and measured, and pruned further while it measures over. Where the
    database's kernel model sees a GEMM tile cliff (`channel_tile`), every group keeps a multiple of the tile.
    """

    scorers = [n for n in method_names() if get_method(n).scores_groups]
    if method not in scorers:
        raise EdgekitError(f"--budget-ms prunes with {' or '.join(scorers)} scores, not '{method}'")
    check_budget(budget_ms)
    out = checkpoint_out(out)
    say = progress or (lambda m: None)
    predictor, _ = ensure_predictor(target, device, threads, db, input_size, progress=say)
    loaded = load_model(model, input_size=input_size)
    size = loaded.card.input_size
    base = loaded.model
    groups = channel_groups(base, size)
    if not groups:
        raise EdgekitError(f"'{model}' has no prunable channel groups")
    scores = get_method(method).group_scores(base, groups)
    stage_of = {g.id: min(STAGES - 1, i * STAGES // len(groups)) for i, g in enumerate(groups)}

    # where the kernel model sees a GEMM tile cliff, kept channel counts round up to the tile
    tile = channel_tile(kernel_model_for(db, target, device, threads, precision_of(None)))

    def build(stage_ratios: list[float]):
        net = copy.deepcopy(base)
        ratios = {g.id: stage_ratios[stage_of[g.id]] for g in groups}
        plan = make_plan(groups, _keep_per_group(scores, groups, ratios, tile=tile))
        apply_plan(net, plan)
        return net, plan

    def predicted(stage_ratios: list[float]) -> float:
        return predictor.predict(cost_features(build(stage_ratios)[0], size))

    full = predictor.predict(cost_features(base, size))
    say("measuring each stage's latency sensitivity")
    saving = [max(1e-6, full - predicted([0.3 if s == t else 0.0 for s in range(STAGES)])) for t in range(STAGES)]
    share = [s / max(saving) for s in saving]

    def ratios_at(scale: float) -> list[float]:
        """Monotonic in `scale` (0..1.7): up to 0.85 the stages grow in proportion to their share, the most
        rewarding one reaching 85 %; beyond, every stage grows alike until all are at 85 %."""
        extra = max(0.0, scale - 0.85)
        return [round(min(0.85, min(scale, 0.85) * w + extra), 3) for w in share]

    if full <= budget_ms:
        scale = 0.0
    else:
        lo, hi = 0.0, 1.7
        floor_ms = predicted(ratios_at(hi))
        if floor_ms > budget_ms:
            raise EdgekitError(
                f"{model} is predicted at {floor_ms:.2f} ms even with 85 % of its "
                f"channels pruned, over {budget_ms:g} ms; choose a smaller model or a larger budget"
            )
        for _ in range(12):
            mid = (lo + hi) / 2
            say(f"searching stage ratios: {ratios_at(mid)}")
            if predicted(ratios_at(mid)) <= budget_ms:
                hi = mid
            else:
                lo = mid
        scale = hi
    attempts = []
    while True:
        stage_ratios = ratios_at(scale)
        net, plan = build(stage_ratios)
        pred_ms = predictor.predict(cost_features(net, size))
        measured_ms = None
        if confirm:
            say(f"confirming: compiling and measuring at stage ratios {stage_ratios}")
            with tempfile.TemporaryDirectory(prefix="edgekit-budget-") as tmp:
                ckpt = Path(tmp) / "candidate.pt"
                save_checkpoint(replace(loaded, model=net), ckpt, plan=plan)
                report, _ = measure(str(ckpt), target, device, threads, db, Path(tmp), input_size=size)
            measured_ms = round(_latency(report), 3)
        attempts.append({"stage_ratios": stage_ratios, "predicted_ms": round(pred_ms, 3), "measured_ms": measured_ms})
        if measured_ms is None or measured_ms <= budget_ms or len(attempts) >= 4 or min(stage_ratios) >= 0.85:
            break
        scale = min(1.7, scale * (1.0 + max(0.05, (measured_ms - budget_ms) / measured_ms)))  # prune more
    report = {
        "method": method,
        "structured": True,
        "budget_ms": budget_ms,
        "target": target,
        "device": device,
        "threads": threads,
        "input_size": size,
        "stage_ratios": stage_ratios,
        "channel_tile": tile,
        "stage_sensitivity_ms": saving,
        "predicted_ms_unpruned": round(full, 3),
        "predicted_ms": round(pred_ms, 3),
        "measured_ms": measured_ms,
        "within_budget": None if measured_ms is None else measured_ms <= budget_ms,
        "attempts": attempts,
        "before": {"params": count_params(base), "macs": count_macs(base, size)},
        "after": {"params": count_params(net), "macs": count_macs(net, size)},
    }
    save_checkpoint(replace(loaded, model=net), out, plan=plan, provenance={"command": "prune", **report})
    return {"checkpoint": str(out), **report}
