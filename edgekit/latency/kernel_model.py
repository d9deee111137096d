"""A kernel-level latency model per (target, device, threads, precision): each kernel's time from its shape, summed,
plus a per-network overhead, with an interval.

**Per kind** (`kernels.KINDS`), time is linear in the work (`design`), each coefficient non-negative, fitted on
relative error: ms = a + b * MACs + b8 * MACs8 + b16 * MACs16 + c * bytes for the compute kinds, where MACs_t counts
the work with the output channels N padded to the runtime's GEMM tile t (XNNPACK's f32 kernels compute 8 or 16
output channels at a time, so a layer of 65 channels costs about what one of 80 does: the fit says how much of the
work is charged at the padded count, `KernelModel.padding_share`); a strided or a large (more than 25 taps: XNNPACK
runs a 7x7 depthwise as an IGEMM, 4.2-4.5 GMAC/s against about 30 for a 3x3 one here) convolution has its own MAC
rates, and a batched matmul a cost per GEMM. Memory-bound kinds: ms = a + e * elements + c * bytes, with a rate of
its own per op (`elements_op:gelu`, `elements_op:softmax`: a softmax costs several times a ReLU per element, a
portable `sum` many times XNNPACK's `mean`) and for a broadcast; a softmax pays per row of its last dim too
(`rows_op:softmax`: over Swin's windows of 16 tokens it ran at 0.6-0.9 ns per element here, over LeViT's rows of 784
at 0.15-0.18). A linear law extrapolates as the hardware does: a
log-log law fitted over many small kernels (whose time is mostly the fixed cost) came out sublinear in MACs and
predicted MobileOne's 640-channel 1x1 convs at half their time. Columns all zero over a kind's samples are left
out; with fewer samples than columns + 3 a kind is fitted on its fixed cost and primary measure alone (MACs or
elements). No kernel is predicted faster than the fastest measured of its kind (the floor).

**Per network**: total = scale * (sum of kernels) + per_network + per_kernel * kernels, fitted (non-negative, on
relative error) on whole-network totals against the sums of their measured per-op rows where they have them: what
per-op rows do not see (delegate calls, the layout moves the runtime inserts, cache effects between kernels); the
cost per kernel only where most networks have no per-op rows (`_fit_overhead`).

**The interval** (90 % by default). Each kind's spread comes from its held-out log residuals, log(measured /
predicted): leave-one-network-out where samples carry the network they came from (three networks or more),
leave-one-out otherwise; the 5 % and 95 % quantiles give a spread below and above, `sigma_lo` = -q05 / z and
`sigma_hi` = q95 / z (z = 1.645), so a skewed spread stays skewed. Errors of kernels of one kind in one network are
correlated (a family's shapes all sit off the fitted law the same way), so a kind's sum is not as tight as
independent errors would make it: the residuals are split (one-way analysis of variance over networks) into a part
shared by a network's kernels of that kind and an independent part, rho = shared / total; without samples grouped by
network, rho = 1 (fully correlated: wider, never narrower than the truth). A kind's relative spread in one network
is sigma * sqrt(rho + (1 - rho) * sum p^2 / (sum p)^2), kinds are taken as independent of each other (their
deviations in ms add in quadrature), and what whole networks show beyond that is added in quadrature too: the excess
variance of the totals' residuals, each network's kernels predicted by fits without its own per-op rows (in-sample
they would fit their own network and the spread come out too narrow). Last, the interval's relative edges are
raised to a power (`overhead["widen"]`, split conformal; never below 1): the one that puts `level` of the
calibration networks' held-out errors inside their own intervals. The spreads above assume normal errors,
independent across kinds; a family's kernels sit off the laws together, and the held-out errors are heavy-tailed (a
few families off by 15-25 %, the rest within a few): `bench/predictor.py` had 78-81 % of networks inside the 90 %
interval.

**Unseen kinds** (no or fewer than `MIN_SAMPLES` samples): predicted by a pooled fit over all compute kinds (fixed
cost, MACs, bytes) or all memory-bound kinds (fixed cost, elements, bytes) with at least a x/÷ 3 spread, fully
correlated, and listed in the prediction's `unseen_kinds`. A kernel of a seen memory-bound kind whose op has no rate of
its own (`unseen_ops`, `kind:op`) is predicted at its kind's base rate with that same spread. `free` kernels cost
nothing.

numpy and scipy's `nnls`; `to_dict`/`from_dict` round-trip through JSON for the database and the cache.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.optimize import nnls

from ..errors import EdgekitError
from .kernels import COMPUTE_KINDS, FAR_MB, Kernel

__all__ = [
    "LEVEL",
    "MIN_SAMPLES",
    "TILES",
    "KindFit",
    "KernelModel",
    "Prediction",
    "design",
    "fit_kernel_model",
]

LEVEL = 0.90
Z = 1.6448536269514722  # the standard normal's 95 % quantile: a two-sided 90 % interval
MIN_SAMPLES = 3
TILES = (8, 16)
PADDED = re.compile(r"(.*macs)_pad\d+")  # a MACs column with the GEMM's N padded to a tile, and the column unpadded
BIG_TAPS = 25  # a depthwise conv of more taps runs as another kernel (XNNPACK: IGEMM)
FALLBACK_SPREAD = math.log(3.0)  # an unseen kind: at least x/÷ 3 at the interval's edge
MIN_SIGMA = 0.01
# A sample more than 4 robust deviations (and more than x/÷ 2) off its kind's law is dropped before the final fit: the
# kernel sweep on a runtime without per-op rows takes a kernel's time as the difference of two medians, and noise left
# some at a fiftieth of their neighbours' (a 3x3 depthwise conv at 1700 GMAC/s, LiteRT here). Fitted on relative
# error, such a sample pulls the whole kind's law down.
OUTLIER_Z = 4.0
OUTLIER_MIN_LOG = math.log(2.0)
OUTLIER_MIN_SAMPLES = 10
# In a kind's fit, each of a network's n per-op rows of that kind weighs 1/n in the squared relative error (a sweep
# sample 1): a network's rows count together as one sample, so a family of many kernels sets no law alone. Unweighted,
# GreedyViG's 174 NCHW <-> NHWC copies (of 321 in 37 networks) set that copy's rate, and the image's copy, 91-107 us
# in every network, was predicted at 52 (ShuffleNetV2, held out: -20 %; -11 % weighted). Leave-one-family-out on
# `bench/predictor.py`'s measurements (ExecuTorch), by the power p of 1/n^p: p = 0 -> 70 % within 10 %, 89 % inside
# the interval; 0.5 -> 70 %, 92 %; 1 -> 78 %, 92 %; 1.5 -> 81 %, 84 %; 2 -> 76 %, 81 %.
GROUP_WEIGHT_POWER = 1.0
ROW_OPS = frozenset({"softmax", "_softmax", "log_softmax", "_log_softmax"})
VERSION = 2  # 1: a log-log law per kind (intercept, log columns)

Sample = tuple[Kernel, float] | tuple[Kernel, float, Any]


def features(kernel: Kernel) -> dict[str, float]:
    """What `design` reads of a kernel: its numbers (`Kernel.features()`) and its op, as `op:NAME` = 1."""
    return kernel.features() | {f"op:{kernel.op}": 1.0}


def design(kind: str, f: dict[str, float]) -> dict[str, float]:
    """The columns a kind's law is linear in, by name, from a kernel's `features` (MACs, bytes and elements in
    millions)."""
    g = f.get
    macs, nbytes, elements = g("macs", 0.0) / 1e6, g("bytes", 0.0) / 1e6, g("elements", 0.0) / 1e6
    cols: dict[str, float] = {"one": 1.0, "bytes": nbytes}
    for mb in FAR_MB:  # inputs made long before: read from a farther cache (columns all zero in a sweep)
        if far := g(f"far_{mb}m", 0.0):
            cols[f"far_{mb}m"] = far / 1e6
    if g("portable", 0.0):  # outside the delegate, on the runtime's own kernels: a dispatch and a rate of their own
        cols["portable_one"] = 1.0
        cols["portable_elements"] = elements
    if kind in COMPUTE_KINDS:
        n = g("gemm_n") or g("cout") or 0.0
        if kind == "conv" and (groups := g("groups", 1.0)) > 1:  # one GEMM per group, of N = cout / groups padded
            n /= groups  # to the tile (RegNetY's convs of 8 channels a group: half the MAC rate of ungrouped ones)
        pre = "big_" if kind == "dwconv" and g("k", 1.0) ** 2 > BIG_TAPS else ""
        if kind in ("conv", "dwconv") and g("stride", 1.0) > 1:
            pre += "strided_"
        cols[pre + "macs"] = macs
        for t in TILES:
            cols[f"{pre}macs_pad{t}"] = macs * (math.ceil(n / t) * t / n if n > 0 else 1.0)
        if kind == "matmul":
            cols["batch"] = g("batch", 1.0)
    else:
        cols["elements"] = elements
        if kind == "elementwise" and g("broadcast", 0.0):
            cols["bcast_elements"] = elements
        for name in f:
            if name.startswith("op:"):
                cols["elements_" + name] = elements
                if name[3:] in ROW_OPS and (last := g("w") or g("cin")):
                    cols["rows_" + name] = elements / last
    return cols


def _pooled_design(category: str | None, f: dict[str, float]) -> dict[str, float]:
    """The columns of the pooled fallback fits: compute kinds on MACs and bytes, memory-bound kinds on elements and
    bytes (`category` None: all, for a prediction, each fit reading its own)."""
    cols = {"one": 1.0, "bytes": f.get("bytes", 0.0) / 1e6}
    if category in ("compute", None):
        cols["macs"] = f.get("macs", 0.0) / 1e6
    if category in ("memory", None):
        cols["elements"] = f.get("elements", 0.0) / 1e6
    return cols


def _primary(kind: str) -> str:
    return "macs" if kind in COMPUTE_KINDS else "elements"


def _category(kind: str) -> str:
    return "compute" if kind in COMPUTE_KINDS else "memory"


@dataclass
class KindFit:
    """One kind's law: ms = sum(coef * column), floored; and its spread."""

    columns: list[str]
    coef: list[float]
    floor: float  # ms: the fastest measured kernel of this kind
    sigma_lo: float  # log-space spread below and above the fit (per kernel), from held-out residuals
    sigma_hi: float
    rho: float  # the share of the spread a network's kernels of this kind have in common
    samples: int
    groups: int  # networks the samples came from (0: all from a sweep, ungrouped)
    pooled: bool = False  # the fallback for unseen kinds, not a kind's own fit

    def ms(self, cols: dict[str, float]) -> float:
        return max(self.floor, sum(c * cols.get(name, 0.0) for name, c in zip(self.columns, self.coef)))


@dataclass
class Prediction:
    """A network's predicted latency: the sum of its kernels plus the overhead, and a `level` interval."""

    ms: float
    low: float
    high: float
    table: list[dict]  # per kernel that is not free: index, kind, op, module, ms, low, high (its own, before the
    # network scale; the interval marginal), seen, portable (outside the delegate)
    unseen_kinds: list[str]  # kinds the fit had no (or too few) samples of: predicted by the pooled fallback
    kernels_ms: float  # the kernels' sum before the overhead
    overhead_ms: float
    level: float = LEVEL
    # ops of a seen memory-bound kind that have no rate of their own in the fit (`kind:op`): predicted at the kind's
    # base rate with the unseen kinds' spread
    unseen_ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KernelModel:
    target: str
    device: str
    threads: int
    precision: str | None
    kinds: dict[str, KindFit]
    fallback: dict[str, KindFit]  # "compute", "memory": pooled fits for kinds never seen
    overhead: dict = field(default_factory=lambda: {"scale": 1.0, "per_network": 0.0, "per_kernel": 0.0})
    level: float = LEVEL

    # -- prediction ------------------------------------------------------------------------------------------------

    def fit_for(self, kind: str) -> tuple[KindFit, bool]:
        """The fit a kind is predicted by, and whether it is the kind's own (seen)."""
        own = self.kinds.get(kind)
        if own is not None:
            return own, True
        cat = _category(kind)
        fb = self.fallback.get(cat) or next(iter(self.fallback.values()), None)
        if fb is None:
            raise EdgekitError("the kernel model was fitted on no samples")
        return fb, False

    def kernel_ms(self, kernel: Kernel) -> float:
        """One kernel's predicted time in ms (0 for a free one): e.g. to compare channel counts near a tile cliff."""
        if kernel.kind == "free":
            return 0.0
        fit, seen = self.fit_for(kernel.kind)
        f = features(kernel)
        return fit.ms(design(kernel.kind, f) if seen else _pooled_design(None, f))

    def padding_share(self, kind: str, tile: int) -> float:
        """How much of a GEMM kind's MAC cost the fit charges at the output channels padded to `tile` (0: none, the
        real count; 1: all, a sharp cliff); 0 for a kind not fitted."""
        fit = self.kinds.get(kind)
        if fit is None:
            return 0.0
        coef = dict(zip(fit.columns, fit.coef))
        total = sum(coef.get(c, 0.0) for c in ("macs", *(f"macs_pad{t}" for t in TILES)))
        return coef.get(f"macs_pad{tile}", 0.0) / total if total > 0 else 0.0

    def predict(self, kernels: Sequence[Kernel]) -> Prediction:
        z = _z(self.level)
        table: list[dict] = []
        by_kind: dict[tuple[str, bool], list[float]] = defaultdict(list)  # (kind, seen) -> kernels' ms
        unseen: list[str] = []
        unseen_ops: list[str] = []
        for i, k in enumerate(kernels):
            if k.kind == "free":
                continue
            fit, seen = self.fit_for(k.kind)
            p = self.kernel_ms(k)
            if not seen and k.kind not in unseen:
                unseen.append(k.kind)
            if seen and _unseen_op(fit, k):
                seen = False
                if f"{k.kind}:{k.op}" not in unseen_ops:
                    unseen_ops.append(f"{k.kind}:{k.op}")
            by_kind[k.kind, seen].append(p)
            table.append(
                {
                    "index": i,
                    "kind": k.kind,
                    "op": k.op,
                    "module": k.module,
                    "ms": p,
                    "low": p * math.exp(-z * _sig(fit, seen, "lo")),
                    "high": p * math.exp(z * _sig(fit, seen, "hi")),
                    "seen": seen,
                    "portable": k.portable,
                }
            )
        total_k = sum(sum(v) for v in by_kind.values())
        n = sum(len(v) for v in by_kind.values())
        oh = self.overhead
        scale = float(oh.get("scale", 1.0))
        ms = scale * total_k + float(oh.get("per_network", 0.0)) + float(oh.get("per_kernel", 0.0)) * n
        dev_hi, dev_lo = self._deviations(by_kind, z)
        net = float(oh.get("sigma", 0.0))
        hi = math.sqrt((scale * dev_hi) ** 2 + (ms * (math.exp(z * net) - 1.0)) ** 2)
        lo = math.sqrt((scale * dev_lo) ** 2 + (ms * (1.0 - math.exp(-z * net))) ** 2)
        widen = float(oh.get("widen", 1.0))
        low = ms * (max(ms - lo, 1e-12 * ms) / ms) ** widen if ms > 0 else 0.0
        return Prediction(
            ms=ms,
            low=max(low, ms * math.exp(-z * 3.0), 0.0),  # never below zero, nor absurdly far
            high=ms * ((ms + hi) / ms) ** widen if ms > 0 else hi,
            table=table,
            unseen_kinds=unseen,
            kernels_ms=total_k,
            overhead_ms=ms - total_k,
            level=self.level,
            unseen_ops=unseen_ops,
        )

    def _deviations(self, by_kind: dict[tuple[str, bool], list[float]], z: float) -> tuple[float, float]:
        """The interval's half-widths above and below from the kernels, in ms (kinds independent, each kind's
        kernels correlated by its rho; a kind's kernels of unseen ops apart, fully correlated)."""
        hi2 = lo2 = 0.0
        for (kind, seen), ps in by_kind.items():
            fit, _ = self.fit_for(kind)
            P = sum(ps)
            if P <= 0:
                continue
            rho = fit.rho if seen else 1.0
            eff = math.sqrt(rho + (1.0 - rho) * sum(p * p for p in ps) / (P * P))
            hi2 += (P * (math.exp(z * _sig(fit, seen, "hi") * eff) - 1.0)) ** 2
            lo2 += (P * (1.0 - math.exp(-z * _sig(fit, seen, "lo") * eff))) ** 2
        return math.sqrt(hi2), math.sqrt(lo2)

    # -- serialization ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "version": VERSION,
            "target": self.target,
            "device": self.device,
            "threads": self.threads,
            "precision": self.precision,
            "level": self.level,
            "kinds": {k: asdict(v) for k, v in self.kinds.items()},
            "fallback": {k: asdict(v) for k, v in self.fallback.items()},
            "overhead": dict(self.overhead),
        }

    @classmethod
    def from_dict(cls, d: dict) -> KernelModel:
        if int(d.get("version", VERSION)) != VERSION:
            raise EdgekitError(f"kernel model version {d.get('version')} (this edgekit reads {VERSION}): fit it again")
        return cls(
            target=d["target"],
            device=d["device"],
            threads=int(d["threads"]),
            precision=d.get("precision"),
            kinds={k: KindFit(**v) for k, v in d["kinds"].items()},
            fallback={k: KindFit(**v) for k, v in d["fallback"].items()},
            overhead=dict(d.get("overhead") or {}),
            level=float(d.get("level", LEVEL)),
        )


def _z(level: float) -> float:
    if abs(level - LEVEL) < 1e-12:
        return Z
    return NormalDist().inv_cdf(0.5 + level / 2)


def _unseen_op(fit: KindFit, kernel: Kernel) -> bool:
    """A memory-bound kernel whose op has no rate of its own in its kind's fit while other ops have one (a portable
    dtype conversion where the fit knows only copies): the kind's base rate may be far off (GreedyViG's bool->float
    conversions: 0.1 us predicted, 30 us measured, before the sweep measured them)."""
    if kernel.kind in COMPUTE_KINDS:
        return False
    ops = [c for c in fit.columns if c.startswith("elements_op:")]
    return bool(ops) and f"elements_op:{kernel.op}" not in ops


def _sig(fit: KindFit, seen: bool, side: str) -> float:
    s = fit.sigma_hi if side == "hi" else fit.sigma_lo
    return s if seen else max(s, FALLBACK_SPREAD / Z)


# -- fitting ---------------------------------------------------------------------------------------------------------


def _correlation(r: np.ndarray, groups: list) -> float:
    """The share of the residual variance common to one network's samples (one-way ANOVA); 1 where it cannot be
    told (samples not grouped by network)."""
    by: dict[Any, list[float]] = defaultdict(list)
    for x, g in zip(r, groups):
        if g is not None:
            by[g].append(float(x))
    multi = [np.array(v) for v in by.values() if len(v) >= 2]
    if len(multi) < 2:
        return 1.0
    within = sum(float(((v - v.mean()) ** 2).sum()) for v in multi) / sum(len(v) - 1 for v in multi)
    means = np.array([v.mean() for v in multi])
    between = max(0.0, float(means.var(ddof=1)) - within * float(np.mean([1.0 / len(v) for v in multi])))
    total = between + within
    return float(between / total) if total > 0 else 1.0


def _nnls_rel(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, weights: np.ndarray | None = None
) -> np.ndarray:
    """Non-negative coefficients minimizing the squared error of X @ c against y relative to `w` (default: y), each
    sample's squared error times its `weights` (default: 1)."""
    w = y if w is None else w
    if weights is not None:
        w = w / np.sqrt(weights)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(X / scale / w[:, None], y / w, maxiter=50 * X.shape[1])
    return c / scale


def _group_weights(groups: list) -> np.ndarray:
    """Each sample's weight in its kind's fit: 1 for a sweep's (no group), 1/n for each of a network's n rows
    (`GROUP_WEIGHT_POWER`)."""
    n = Counter(g for g in groups if g is not None)
    return np.array([1.0 if g is None else n[g] ** -GROUP_WEIGHT_POWER for g in groups])


def _inliers(X: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The samples within `OUTLIER_Z` robust deviations (and x/÷ 2) of a law fitted relative to its own prediction
    (two reweighting passes), which a sample measured at a fraction of what its shape says cannot pull down as it
    pulls a fit relative to the measurements (`c`, where the reweighting starts)."""
    for _ in range(2):
        c = _nnls_rel(X, y, np.maximum(X @ c, 1e-3 * float(np.median(y))))
    r = np.log(y / np.maximum(X @ c, 1e-12))
    dev = np.abs(r - np.median(r))
    return dev <= max(OUTLIER_Z * 1.4826 * float(np.median(dev)), OUTLIER_MIN_LOG)


def _same_column(X: np.ndarray, names: list[str], i: int, other: str) -> bool:
    return other in names and bool(np.allclose(X[:, i], X[:, names.index(other)], rtol=1e-9, atol=0.0))


def _fit_rows(
    rows: list[dict[str, float]], ms: np.ndarray, groups: list, primary: str, pooled: bool = False, spread: bool = True
) -> KindFit:
    names = sorted({c for r in rows for c in r})
    X = np.array([[r.get(c, 0.0) for c in names] for r in rows], dtype=float).reshape(len(rows), len(names))
    keep = [i for i in range(len(names)) if np.abs(X[:, i]).max() > 0]
    # how far back data was touched is learned from networks' rows: a sweep program's weights, "far" by the program's
    # own traffic, mostly stay in cache, and from a sweep alone (LiteRT before its per-op rows) the far columns became
    # a second rate per weight byte that every network's weights then paid (LiteRT 46 % -> 41 % within 10 %)
    in_nets = np.array([g is not None for g in groups], dtype=bool)
    keep = [i for i in keep if not names[i].startswith("far_") or np.abs(X[in_nets, i]).max(initial=0.0) > 0]
    # a tile's padding is learned only where some sample's channels are not a multiple of the tile: otherwise its
    # column equals the unpadded one and the fit's choice between them is arbitrary (StarNet's 7x7 depthwise convs of
    # 12 channels were charged 16 by a pad-8 rate learned from samples of 24 to 384 channels)
    keep = [i for i in keep if not (m := PADDED.fullmatch(names[i])) or not _same_column(X, names, i, m[1])]
    if len(ms) < len(keep) + 3:
        keep = [i for i in keep if names[i] in ("one", primary)]
    X = X[:, keep]
    cols = [names[i] for i in keep]
    coef = _nnls_rel(X, ms, weights=_group_weights(groups))
    if len(ms) >= OUTLIER_MIN_SAMPLES:
        inlier = _inliers(X, ms, coef)
        if not inlier.all() and inlier.sum() >= len(cols) + 3:
            X, ms, groups = X[inlier], ms[inlier], [g for g, i in zip(groups, inlier) if i]
            coef = _nnls_rel(X, ms, weights=_group_weights(groups))
    r = np.zeros(len(ms))
    if spread and len(ms) > len(cols):
        pred = np.empty(len(ms))
        named = sorted({x for x in groups if x is not None}, key=str)
        done = np.zeros(len(ms), dtype=bool)
        if len(named) >= 3:
            for grp in named:
                inside = np.array([x == grp for x in groups])
                if inside.all() or (~inside).sum() < len(cols):
                    continue
                pred[inside] = X[inside] @ _nnls_rel(X[~inside], ms[~inside])
                done |= inside
        for i in np.flatnonzero(~done):
            mask = np.ones(len(ms), dtype=bool)
            mask[i] = False
            pred[i] = X[i] @ _nnls_rel(X[mask], ms[mask])
        r = np.log(ms / np.maximum(pred, 1e-9))
    q05, q95 = np.quantile(r, [0.05, 0.95]) if len(r) else (0.0, 0.0)
    return KindFit(
        columns=cols,
        coef=[float(c) for c in coef],
        floor=float(ms.min()),
        # a seen kind is never taken as less known than an unseen one (x/÷ 3 at the interval's edge): held out one
        # network at a time from a calibration of 12, the far rates of a kind that one network alone shows came out
        # ×190 per kernel and MobileNetV2's interval [2.6, 14.8] ms
        sigma_lo=min(max(float(-q05) / Z, MIN_SIGMA), FALLBACK_SPREAD / Z),
        sigma_hi=min(max(float(q95) / Z, MIN_SIGMA), FALLBACK_SPREAD / Z),
        rho=_correlation(r, groups),
        samples=int(len(ms)),
        groups=len({x for x in groups if x is not None}),
        pooled=pooled,
    )


Rows = list[tuple[dict[str, float], float, Any]]  # a kind's samples: (features, ms, network or None)
Network = tuple[Sequence[Kernel], float] | tuple[Sequence[Kernel], float, Any]


def _same(g: Any) -> Any:
    return g


def _fit_kinds(per_kind: dict[str, Rows], spread: bool = True) -> tuple[dict[str, KindFit], dict[str, KindFit]]:
    """Each kind's own fit (where it has `MIN_SAMPLES`) and the pooled fallbacks; `spread` False skips the held-out
    residuals (coefficients only: the refits `_fit_overhead` makes without one family)."""
    kinds: dict[str, KindFit] = {}
    pooled: dict[str, Rows] = defaultdict(list)
    for kind, rows in per_kind.items():
        pooled[_category(kind)] += rows
        if len(rows) >= MIN_SAMPLES:
            kinds[kind] = _fit_rows(
                [design(kind, f) for f, _, _ in rows],
                np.array([m for _, m, _ in rows]),
                [g for *_, g in rows],
                _primary(kind),
                spread=spread,
            )
    fallback = {
        cat: _fit_rows(
            [_pooled_design(cat, f) for f, _, _ in rows],
            np.array([m for _, m, _ in rows]),
            [g for *_, g in rows],
            "macs" if cat == "compute" else "elements",
            pooled=True,
            spread=spread,
        )
        for cat, rows in pooled.items()
    }
    return kinds, fallback


def _held_out_sums(
    model: KernelModel, nets: list, per_kind: dict[str, Rows], family: Callable[[Any], Any] = _same
) -> np.ndarray:
    """Each network's kernels summed by fits without its family's per-op samples (where it has some: a network named
    by the samples' group), one fit per family; the model's own sum for the others."""
    out = []
    sampled = {g for rows in per_kind.values() for *_, g in rows if g is not None}
    without: dict[Any, KernelModel] = {}  # family -> the fit without its samples (a family's networks share it)
    for ks, _, group in nets:
        m = model
        if group in sampled:
            mine = family(group)
            if mine not in without:
                rest = {k: [r for r in rows if r[2] is None or family(r[2]) != mine] for k, rows in per_kind.items()}
                kinds, fallback = _fit_kinds({k: v for k, v in rest.items() if v}, spread=False)
                without[mine] = KernelModel(model.target, model.device, model.threads, model.precision, kinds, fallback)
            m = without[mine]
        out.append(sum(m.kernel_ms(k) for k in ks))
    return np.array(out)


def _fit_overhead(
    model: KernelModel, networks: Sequence[Network], per_kind: dict[str, Rows], family: Callable[[Any], Any] = _same
) -> dict:
    """scale, per_network, per_kernel from whole-network totals, the spread they show beyond the kernels'
    (`sigma`) and the power the intervals are widened by to hold them (`widen`, `_widening`). A network with per-op
    samples (named by their group) enters with the sum of its measured rows: the overhead is then what the rows do
    not see (the delegate call, the copies the runtime inserts), and a kernel kind
    the fit gets wrong in other families is not carried into every network through the overhead (fitted on the
    kernel model's sums, a per-kernel cost of 4 us learned from GreedyViG's 1235 kernels put MobileViG-Ti pruned by
    70 % at +60 %). Where most networks have no per-op rows (ONNX, or a calibration of sweeps alone), the sums are
    the model's and a cost per kernel is fitted too. The spread is measured on held-out sums: each network's kernels
    predicted by fits that never saw its own per-op rows, as a network the user brings will be; in-sample, the
    kernels would fit their own network's rows and the spread come out too narrow."""
    nets = [(list(n[0]), float(n[1]), n[2] if len(n) > 2 else None) for n in networks if float(n[1]) > 0]
    if not nets:
        return {"scale": 1.0, "per_network": 0.0, "per_kernel": 0.0, "sigma": 0.0, "networks": 0}
    measured: dict[Any, float] = defaultdict(float)
    for rows in per_kind.values():
        for _, ms, g in rows:
            if g is not None:
                measured[g] += ms
    S = np.array([measured.get(g) or sum(model.kernel_ms(k) for k in ks) for ks, _, g in nets])
    N = np.array([sum(1 for k in ks if k.kind != "free") for ks, _, _ in nets], dtype=float)
    T = np.array([t for _, t, _ in nets])
    if len(nets) >= 4:
        per_op = 2 * sum(1 for *_, g in nets if measured.get(g)) >= len(nets)
        A = np.stack([S, np.ones_like(S), np.zeros_like(N) if per_op else N], axis=1) / T[:, None]
        scale, per_net, per_kernel = (float(v) for v in nnls(A, np.ones(len(T)))[0])
        if scale <= 0:
            scale = 1.0
    else:
        scale, per_kernel = 1.0, 0.0
        per_net = max(0.0, float(np.median(T - S)))
    oh = {"scale": scale, "per_network": per_net, "per_kernel": per_kernel, "sigma": 0.0, "networks": len(nets)}
    if len(nets) >= 4:
        model.overhead = oh
        pred = scale * _held_out_sums(model, nets, per_kind, family) + per_net + per_kernel * N
        r = np.log(T / np.maximum(pred, 1e-9))
        kernel_part = []
        for ks, _, _ in nets:
            p = model.predict(ks)
            kernel_part.append(((p.high - p.ms) + (p.ms - p.low)) / 2 / max(p.ms, 1e-9) / _z(model.level))
        dof = len(nets) / max(len(nets) - 3, 1)
        excess = float(np.mean(r**2)) * dof - float(np.mean(np.square(kernel_part)))
        oh["sigma"] = math.sqrt(max(excess, 0.0))
        oh["widen"] = _widening(model, nets, r)
    return oh


def _widening(model: KernelModel, nets: list, r: np.ndarray) -> float:
    """The power the intervals' relative edges are raised to so that `level` of the networks' held-out log errors
    `r` fall inside their own intervals (split conformal, scores normalized by each network's own interval): the
    spreads above assume normal errors independent across kinds, and a family's kernels sit off the laws together
    (leave-one-family-out in `bench/predictor.py`: 78-81 % inside the 90 % interval before)."""
    scores = []
    for (ks, _, _), x in zip(nets, r):
        p = model.predict(ks)  # the overhead's sigma set, no widening yet
        edge = p.high / p.ms if x >= 0 else p.ms / max(p.low, 1e-12)
        scores.append(abs(float(x)) / max(math.log(edge), 1e-6))
    n = len(scores)
    rank = min(math.ceil((n + 1) * model.level), n)  # the finite-sample conformal quantile
    # never narrowed: networks held out one at a time (no `family`) have siblings in the fit, and read too well
    return max(sorted(scores)[rank - 1], 1.0)


def fit_kernel_model(
    samples: Iterable[Sample],
    networks: Sequence[Network] = (),
    *,
    target: str = "",
    device: str = "",
    threads: int = 1,
    precision: str | None = None,
    level: float = LEVEL,
    family: Callable[[Any], Any] | None = None,
) -> KernelModel:
    """Fit on measured kernels: `samples` are `(kernel, ms)` (a sweep's kernels measured alone) or `(kernel, ms,
    network)` (per-op rows of a full network, `network` any hashable naming it: it lets the spread be split into what
    a network's kernels share and what they do not); `networks` are `(kernels, total ms)` or `(kernels, total ms,
    network)` of whole networks, for the overhead (`network` as in the samples: the overhead's spread is then taken
    on fits without that network's rows). `family` maps a network to its family (the same architecture at other
    widths or pruned): the overhead's spread is then taken on fits without the network's whole family, as a network
    of a family the fit never saw will be predicted (the kinds' own spreads stay held out by network: by family, a
    family's op-specific rates are unknown and the layout kind's residuals so heavy-tailed that LeViT's interval
    came out [4.4, 31] ms); without it each network is its own family, and siblings in the data make the intervals
    too narrow for a new architecture (leave-one-family-out in `bench/predictor.py`: 78 % inside the 90 % interval,
    3 of 3 GreedyViG widths outside). Samples of no time (a row under the timer's resolution) and free kernels are
    left out."""
    per_kind: dict[str, Rows] = defaultdict(list)
    for s in samples:
        kernel, ms = s[0], float(s[1])
        group = s[2] if len(s) > 2 else None
        if not isinstance(kernel, Kernel):
            kernel = Kernel.from_dict(kernel)  # a kernel as the database stores it
        if kernel.kind == "free" or not ms > 0 or not math.isfinite(ms):
            continue
        per_kind[kernel.kind].append((features(kernel), ms, group))
    if not per_kind:
        raise EdgekitError("no measured kernels to fit the kernel model on (every sample free or of no time)")
    family = family or _same
    kinds, fallback = _fit_kinds(per_kind)
    model = KernelModel(target, device, threads, precision, kinds, fallback, level=level)
    model.overhead = _fit_overhead(model, networks, per_kind, family)
    return model
