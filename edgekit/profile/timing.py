"""Fair side-by-side timing: interleaved rounds, garbage collection paused, every sample kept."""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator


def summarize(samples_s: list[float]) -> dict:
    """Statistics of samples in seconds, in ms; `samples_ms` keeps the samples in the order they were taken."""
    ms = sorted(s * 1e3 for s in samples_s)
    q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) >= 2 else ms * 9
    quart = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) >= 2 else ms * 3
    return {
        "runs": len(ms),
        "min_ms": ms[0],
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "p90_ms": q[-1],
        "iqr_ms": quart[2] - quart[0],
        "samples_ms": [round(s * 1e3, 4) for s in samples_s],
    }


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of `runs` calls of `fn` (call under `gc_paused`)."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int = 10, per_round: int = 5, warmup: int = 5
) -> dict[str, dict]:
    """Time each callable in turn, `per_round` runs at a time, for `rounds` rounds.

    Interleaving spreads any slow phase of a shared machine over all contenders instead of one.
    """
    for fn in fns.values():
        timed(fn, warmup)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with gc_paused():
        for _ in range(rounds):
            for name, fn in fns.items():
                samples[name] += timed(fn, per_round)
    return {k: summarize(v) for k, v in samples.items()}
