"""`edgekit prune`: one call from a model reference to an edgekit checkpoint of the pruned network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import evaluate, load_dataset
from ..devices import runtime, to_cpu
from ..errors import EdgekitError
from ..models import checkpoint_out, count_macs, load_model, save_checkpoint
from ..models.surgery import apply_plan
from ..specs import DEFAULT_DATA, PruneSpec
from .graph import analyse_channels
from .magnitude import group_scores, magnitude_structured, prunable_weights
from .methods import get_method
from .plan import make_plan, round_keep


@dataclass
class PruneResult:
    checkpoint: Path
    report: dict


# what `prunable_weights` leaves out, said in the report next to the weights it left out
EXCLUDED_RULE = (
    "not pruned: the first convolution (the RGB stem), the classifier layers (the last layers, with as many "
    "outputs as the last one, and layers named head, dist_head, fc or classifier, or under classifier) and "
    "weights of layers other than Conv2d and Linear"
)


def _nonzero_params(model: torch.nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def _zero_fraction(tensors) -> float:
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / total if total else 0.0


def _fit_classes(net: torch.nn.Module, classes: int, loaded) -> None:
    if loaded.card.num_classes != classes:
        raise EdgekitError(
            f"the model has {loaded.card.num_classes} classes and the data {classes}; "
            f"pass --num-classes {classes} (or a checkpoint trained on this data)"
        )


def prune(
    model: str,
    method: str,
    ratio: float,
    *,
    out: str | Path,
    structured: bool = PruneSpec.default("structured"),
    data: str = DEFAULT_DATA,
    steps: int = PruneSpec.default("steps"),
    optimizer: str = PruneSpec.default("optimizer"),
    round_to: int = PruneSpec.default("round_to"),
    device: str = PruneSpec.default("device"),
    precision: str = PruneSpec.default("precision"),
    workers: int | None = PruneSpec.default("workers"),
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
) -> PruneResult:
    """Prune `model` (a reference) with `method` (a registered `PruningMethod`'s name) at `ratio` and write an
    edgekit checkpoint to `out`."""
    pm = get_method(method)
    # not validated here: the ratio has its own message below, and the method checks its own options
    spec = PruneSpec.model_construct(
        method=method, ratio=ratio, structured=structured, steps=steps, optimizer=optimizer, round_to=round_to,
        device=device, precision=precision, workers=workers,  # type: ignore[arg-type]  # checked by runtime()
    )  # fmt: skip
    pm.check(spec)
    if not 0.0 < float(ratio) < 1.0:
        raise EdgekitError(f"--ratio {ratio} is out of range; give a fraction between 0 and 1, e.g. 0.5")
    if not 1 <= int(round_to) <= 256:
        raise EdgekitError(f"--round-to {round_to} is out of range; give 1 to 256 (1: any channel count)")
    out = checkpoint_out(out)
    rt = runtime(device, precision) if pm.trains else None  # an unavailable device: one line before the work
    # the first forward, before the data and the graph analysis: one line where the network cannot run at the size
    loaded = load_model(model, weights=weights, num_classes=num_classes, input_size=input_size, probe=True)
    net, size = loaded.model, loaded.card.input_size
    dataset = None
    if pm.needs_data:  # check the data before the (slower) graph analysis
        dataset = load_dataset(data, size, loaded.card.mean, loaded.card.std)
        _fit_classes(net, dataset.num_classes, loaded)
    before = {
        "params": sum(p.numel() for p in net.parameters()),
        "nonzero_params": _nonzero_params(net),
        "macs": count_macs(net, size),
    }
    plan = None
    report: dict = {"method": method, "ratio": ratio, "structured": structured, "input_size": size}
    if pm.trains or structured:
        report["round_to"] = round_to
    if pm.trains or structured:
        groups, left_out = analyse_channels(net, size)
        if not groups:
            why = f"; left out: {left_out[0].line()}" if left_out else ""
            raise EdgekitError(f"'{model}' has no prunable channel groups{why}")
        report["left_out"] = [lo.line() for lo in left_out]
        log = None
        if pm.trains:
            keep, log = pm.train(net, groups, ratio, dataset, spec)
            report[pm.name] = log
            scores = {g.id: group_scores(net, g) for g in groups}  # its zeroed channels score 0
        else:
            scores = pm.group_scores(net, groups)
            keep = magnitude_structured(net, groups, ratio, scores=scores)
        # a trained method's kept channels carry what it learnt: round up, adding zeroed ones
        keep = round_keep(groups, keep, scores, round_to, up=pm.trains)
        plan = make_plan(groups, keep)
        apply_plan(net, plan)
        if log is not None and dataset is not None:
            assert rt is not None  # a trained method has its runtime
            log["val_accuracy_subnet"] = evaluate(rt.place(net), dataset.val, rt)
            to_cpu(net)
        report["groups"] = len(groups)
        report["channels_removed"] = sum(g.size - len(keep[g.id]) for g in groups)
        report["channels_total"] = sum(g.size for g in groups)
    else:
        if not prunable_weights(net):
            raise EdgekitError(
                f"'{model}' has no weights unstructured pruning may zero (its first convolution and its classifier "
                "are kept); pass --structured or give a deeper network"
            )
        report[f"sparsity_per_{pm.sparsity_unit}"] = pm.unstructured(net, ratio)
    after = {
        "params": sum(p.numel() for p in net.parameters()),
        "nonzero_params": _nonzero_params(net),
        "macs": count_macs(net, size),
    }
    prunable = prunable_weights(net)
    report["prunable_sparsity"] = _zero_fraction(prunable.values())
    # next to it, over every weight a user would count (each `weight` of 2+ dims, the kept ones included)
    every = {n: p for n, p in net.named_parameters() if n.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2}
    report["sparsity_all_weights"] = _zero_fraction(every.values())
    report["excluded_weights"] = [n for n in every if n not in prunable]
    report["excluded_rule"] = EXCLUDED_RULE
    report.update(before=before, after=after)
    provenance = {"command": "prune", **{k: v for k, v in report.items() if not k.startswith("sparsity_per")}}
    if rt is None or rt.main:  # under torchrun, rank 0 writes
        save_checkpoint(loaded, out, plan=plan, provenance=provenance)
    if rt is not None:
        rt.barrier()
    return PruneResult(out, report)
