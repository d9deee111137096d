"""Only-Train-Once, in edgekit: structured sparsity by training, subnet built from the zero groups.

The zero-invariant groups (ZIGs) are the channels of `channel_groups`: zeroing a ZIG's producer and
pass-through slices makes its channel exactly zero, so the compact subnet computes exactly what the
group-sparse full model computes, with no fine-tuning. Two optimizers drive ZIGs to zero:

- HESSO (OTOv3's default): after a warm-up, the steps are cut into periods; each period the
  lowest-scoring remaining ZIGs (score: a mix of the group's norm, its norm per element, and the
  first-order saliency |<x, grad>|) are shrunk linearly to exactly zero by the period's end.
- DHSPG (OTOv2/v3): ZIGs are split into important and redundant by the same score; the redundant ones
  take a group-lasso step (lambda, amplified while sparsity lags the target) followed by the half-space
  projection (x <- 0 where <x_new, x_old> < epsilon ||x_old||^2). Redundant ZIGs the projection has not
  reached by the last step are projected then, and the report says how many.

Defaults follow the published ones (PAPERS.md): lmbda 1e-3, lmbda_amplify 2, hat_lmbda_coeff 10,
epsilon 0.95, tolerance 0.05.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import Dataset, TrainLoader, evaluate
from ..devices import DeviceError, Runtime, runtime, synchronized, to_cpu
from ..errors import EdgekitError
from ..models.surgery import tensor_at
from ..specs import PruneSpec
from .graph import Entry, Group
from .methods import PruningMethod, register_method


@dataclass
class OTOConfig:
    optimizer: str = "hesso"
    steps: int = 200
    lr: float = 0.01
    batch_size: int = 64
    warmup_fraction: float = 0.2
    periods: int = 4
    lmbda: float = 1e-3
    lmbda_amplify: float = 2.0
    hat_lmbda_coeff: float = 10.0
    epsilon: float = 0.95
    tolerance: float = 0.05
    seed: int = 0


@dataclass
class ZIGs:
    """Views of every group's producer / pass-through tensors, for per-channel norms and updates."""

    groups: list[Group]
    slices: dict[int, list[tuple[torch.Tensor, Entry]]] = field(default_factory=dict)

    @classmethod
    def build(cls, model: nn.Module, groups: list[Group]) -> ZIGs:
        z = cls(groups)
        for g in groups:
            z.slices[g.id] = []
            for e in g.entries:
                if e.role == "in" or "running" in e.fqn:
                    continue
                _, _, t = tensor_at(model, e.fqn)
                z.slices[g.id].append((t, e))
        return z

    def _rows(self, g: Group, grad: bool = False) -> torch.Tensor:
        """g.size x (all of the group's elements per channel)."""
        parts = []
        for t, e in self.slices[g.id]:
            src = t.grad if grad else t
            if src is None:
                src = torch.zeros_like(t)
            parts.append(e.rows(src.detach(), g.size))
        return torch.cat(parts, 1)

    def scores(self) -> dict[tuple[int, int], float]:
        """HESSO's saliency mix per ZIG (group id, channel); lower is more redundant.

        The mean of three criteria, each divided by its mean over all ZIGs: the group's norm, its norm
        per element, and the first-order saliency |<x, grad>|.
        """
        keys, crit = [], []
        for g in self.groups:
            x, d = self._rows(g), self._rows(g, grad=True)
            n = x.norm(dim=1)
            crit.append(torch.stack([n, n / max(1, x.shape[1]) ** 0.5, (x * d).sum(1).abs()], 1))
            keys += [(g.id, c) for c in range(g.size)]
        c = torch.cat(crit)
        mixed = (c / (c.mean(0, keepdim=True) + 1e-12)).mean(1)
        return dict(zip(keys, mixed.tolist()))

    @torch.no_grad()
    def scale(self, zigs: list[tuple[int, int]], factor: float) -> None:
        by_group: dict[int, list[int]] = {}
        for gid, c in zigs:
            by_group.setdefault(gid, []).append(c)
        for gid, chans in by_group.items():
            self.scale_rows(gid, chans, torch.full((len(chans),), float(factor)))

    @torch.no_grad()
    def scale_rows(self, gid: int, chans: list[int], factors: torch.Tensor) -> None:
        """Multiply channel `chans[i]` of group `gid` by `factors[i]` in every tensor of the group."""
        for t, e in self.slices[gid]:
            idx = torch.tensor(e.positions(chans), dtype=torch.long)
            shape = [1] * t.dim()
            shape[e.dim] = len(idx)
            per_position = factors.repeat_interleave(e.per)
            t.index_copy_(e.dim, idx, t.index_select(e.dim, idx) * per_position.view(shape).to(t.dtype))

    def norms(self, zigs: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
        rows = {g.id: self._rows(g).norm(dim=1) for g in self.groups}
        return {(gid, c): float(rows[gid][c]) for gid, c in zigs}


def _step(net: nn.Module, opt, it: Iterator, loss_fn, rt: Runtime) -> float:
    x, y = next(it)
    opt.zero_grad(set_to_none=False)
    with rt.autocast():
        out = net(x)
        if isinstance(out, (tuple, list)):  # distillation heads: both learn the labels
            loss = sum(loss_fn(o, y) for o in out) / len(out)
        else:
            loss = loss_fn(out, y)
    loss.backward()
    return rt.mean(float(loss.detach()))


def _batches(data: Dataset, cfg: OTOConfig, rt: Runtime, workers: int) -> Iterator:
    """Endless training batches on the device, this rank's slice of each global batch, epoch after epoch."""
    loader = TrainLoader(
        data.train, cfg.batch_size, seed=cfg.seed, rank=rt.rank, world=rt.world, workers=workers,
        pin_memory=rt.device.type == "cuda",
    )  # fmt: skip
    pre, epoch = data.train.preprocess, 0
    while True:
        for raw, y in loader.epoch(epoch):
            yield pre(rt.to(raw)), y.to(rt.device, non_blocking=True)
        epoch += 1


def oto_train(
    model: nn.Module,
    groups: list[Group],
    ratio: float,
    data: Dataset,
    cfg: OTOConfig,
    rt: Runtime | None = None,
    workers: int = 0,
) -> dict:
    """Train `model` in place until `ratio` of all ZIGs are exactly zero. Returns the ZIGs zeroed and a log.

    On `rt`'s device, data-parallel over its ranks: the gradients are averaged before any score or projection
    reads them, so every rank picks and zeroes the same groups."""
    rt = rt or Runtime()
    if rt.precision == "fp16":
        raise DeviceError("--precision fp16: OTO's projections read unscaled gradients; use bf16 or fp32")
    torch.manual_seed(cfg.seed + 7919 * rt.rank)
    rt.place(model)
    it = _batches(data, cfg, rt, workers)
    with synchronized(model, rt):
        net: nn.Module = model
        if rt.distributed:
            net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        return _oto_loop(model, net, groups, ratio, cfg, rt, it)


def _oto_loop(model, net, groups, ratio, cfg: OTOConfig, rt: Runtime, it: Iterator) -> dict:
    zigs = ZIGs.build(model, groups)
    total = sum(g.size for g in groups)
    floor = {g.id: max(1, int(round(0.1 * g.size))) for g in groups}  # every group keeps a tenth
    target = min(int(ratio * total), sum(g.size - floor[g.id] for g in groups))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    warm = int(cfg.steps * cfg.warmup_fraction)
    losses: list[float] = []
    zero: list[tuple[int, int]] = []

    def pick(n: int, exclude: set) -> list[tuple[int, int]]:
        scores = zigs.scores()
        left = {g.id: g.size - floor[g.id] - sum(1 for z in exclude if z[0] == g.id) for g in groups}
        chosen: list[tuple[int, int]] = []
        for k in sorted((k for k in scores if k not in exclude), key=lambda k: scores[k]):
            if len(chosen) == n:
                break
            if left[k[0]] > 0:
                chosen.append(k)
                left[k[0]] -= 1
        return chosen

    for _ in range(warm):
        losses.append(_step(net, opt, it, loss_fn, rt))
        opt.step()
    rest = cfg.steps - warm
    log: dict = {"optimizer": cfg.optimizer, "zigs": total, "target": target}
    if cfg.optimizer == "hesso":
        period = max(1, rest // cfg.periods)
        per_period = [target // cfg.periods + (1 if i < target % cfg.periods else 0) for i in range(cfg.periods)]
        for p in range(cfg.periods):
            losses.append(_step(net, opt, it, loss_fn, rt))  # fresh gradients for the saliency
            new = pick(per_period[p], set(zero))
            steps = period if p < cfg.periods - 1 else rest - period * (cfg.periods - 1)
            for t in range(steps):
                if t:
                    losses.append(_step(net, opt, it, loss_fn, rt))
                opt.step()
                zigs.scale(zero, 0.0)
                remaining = steps - t
                zigs.scale(new, (remaining - 1) / remaining)  # linear to exactly zero at the period's end
            zero += new
        zigs.scale(zero, 0.0)
        log["projected_at_end"] = 0
    elif cfg.optimizer == "dhspg":
        losses.append(_step(net, opt, it, loss_fn, rt))
        redundant = pick(target, set())
        by_group: dict[int, list[int]] = {}
        for gid, c in redundant:
            by_group.setdefault(gid, []).append(c)
        gmap = {g.id: g for g in groups}
        lmbda, hat = cfg.lmbda, cfg.lmbda * cfg.hat_lmbda_coeff
        reached: set = set()
        check = max(1, rest // cfg.periods)
        for t in range(rest):
            if t:
                losses.append(_step(net, opt, it, loss_fn, rt))
            old = {gid: zigs._rows(gmap[gid])[chans].clone() for gid, chans in by_group.items()}
            opt.step()
            with torch.no_grad():  # group-lasso step on the redundant ZIGs, then half-space projection
                for gid, chans in by_group.items():
                    n_old = old[gid].norm(dim=1)
                    live = n_old > 0
                    factors = torch.where(live, (1 - cfg.lr * lmbda / n_old.clamp_min(1e-12)).clamp_min(0), 0.0)
                    zigs.scale_rows(gid, chans, factors)
                    rows = zigs._rows(gmap[gid])[chans]
                    project = ((rows * old[gid]).sum(1) < cfg.epsilon * n_old.pow(2)) | ~live
                    if project.any():
                        zigs.scale_rows(gid, chans, (~project).to(rows.dtype))
                        reached.update((gid, c) for c, pr in zip(chans, project.tolist()) if pr)
            if (t + 1) % check == 0 and len(reached) < (1 - cfg.tolerance) * target * (t + 1) / rest:
                lmbda = min(hat, lmbda * cfg.lmbda_amplify)
        log["projected_by_half_space"] = len(reached)
        log["projected_at_end"] = len(set(redundant) - reached)
        log["final_lmbda"] = lmbda
        zero = redundant
        zigs.scale(zero, 0.0)
    else:
        raise ValueError(f"unknown OTO optimizer {cfg.optimizer}")
    model.eval()
    log["loss_first"] = sum(losses[:10]) / max(1, len(losses[:10]))
    log["loss_last"] = sum(losses[-10:]) / max(1, len(losses[-10:]))
    log["zeroed"] = len(zero)
    keep = {g.id: [c for c in range(g.size) if (g.id, c) not in set(zero)] for g in groups}
    return {"keep": keep, "log": log}


OPTIMIZERS = ("hesso", "dhspg")


class OTO(PruningMethod):
    """Only-Train-Once: trains on the data until the dropped channel groups are exactly zero."""

    name = "oto"
    trains = True
    needs_data = True

    def check(self, spec: PruneSpec) -> None:
        if spec.optimizer not in OPTIMIZERS:
            raise EdgekitError(f"unknown OTO optimizer '{spec.optimizer}'; choose hesso or dhspg")

    def train(
        self, net: nn.Module, groups: list[Group], ratio: float, dataset: Dataset | None, spec: PruneSpec
    ) -> tuple[dict[int, list[int]], dict]:
        assert dataset is not None  # needs_data: the API loaded it
        rt = runtime(spec.device, spec.precision)
        rt.place(net)
        acc_before = evaluate(net, dataset.val, rt)
        workers = spec.workers if spec.workers is not None else 0
        cfg = OTOConfig(optimizer=spec.optimizer, steps=spec.steps)
        result = oto_train(net, groups, ratio, dataset, cfg, rt, workers)
        log = result["log"]
        log["val_accuracy_before_training"] = acc_before
        log["val_accuracy_group_sparse"] = evaluate(net, dataset.val, rt)
        log["device"], log["world_size"] = str(rt.device), rt.world
        to_cpu(net)  # the plan is applied and measured on the CPU
        return result["keep"], log


register_method(OTO())
