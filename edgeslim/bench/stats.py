"""Latency statistics: percentiles, CV, throughput, speedup with a bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: a coefficient of variation above this means an unstable measurement (trtexec's own warning on its GPU
#: compute time is at 1%, which a shared CPU host exceeds in most runs; bench reports trtexec's beside it)
CV_WARN = 0.025


def summarize(samples_s: Sequence[float], batch: int = 1) -> dict[str, float]:
    """p50/p90/p99/mean/std/min/max in milliseconds, CV, and throughput (samples/s at p50)."""
    x = np.asarray(samples_s, dtype=float) * 1e3
    if x.size == 0:
        raise ValueError("no samples")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    return {
        "n": int(x.size),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(x.min()),
        "max_ms": float(x.max()),
        "cv": std / mean if mean > 0 else 0.0,
        "throughput_per_s": batch * 1e3 / p50 if p50 > 0 else 0.0,
    }


#: trials from which the speedup's interval resamples whole trials only (fewer: trials, then samples)
MIN_TRIALS_BOOTSTRAP = 5


def speedup(
    base_trials: Sequence[Sequence[float]],
    slim_trials: Sequence[Sequence[float]],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Speedup = median over trials of the baseline's p50 / the same for slim (median-based).

    The interval is a paired percentile bootstrap over trials (trial i of each model ran
    back to back) from :data:`MIN_TRIALS_BOOTSTRAP` trials on; with fewer, whose resamples of whole
    trials take a handful of values (2 trials: 3), a two-level bootstrap: trials with replacement,
    then the samples within each (with one trial: its samples). Returns the value, the interval,
    the method and the per-trial ratios.
    """
    rng = np.random.default_rng(seed)
    b = np.array([np.median(t) for t in base_trials])
    s = np.array([np.median(t) for t in slim_trials])
    n = min(len(b), len(s))
    b, s = b[:n], s[:n]
    value = float(np.median(b) / np.median(s))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    if n >= MIN_TRIALS_BOOTSTRAP:
        idx = rng.integers(0, n, size=(n_boot, n))
        boots = np.median(b[idx], axis=1) / np.median(s[idx], axis=1)
        method = f"median of per-trial p50, paired bootstrap over {n} trials ({n_boot} resamples)"
    else:  # two levels: trials (paired) with replacement, then the samples within each chosen trial

        def resampled_p50(trials: Sequence[Sequence[float]]) -> np.ndarray:
            """(n_boot, n): each trial's p50 over a resample of its own samples."""
            cols = []
            for t in trials[:n]:
                x = np.asarray(t)
                cols.append(np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1))
            return np.stack(cols, axis=1)

        pick = rng.integers(0, n, size=(n_boot, n))  # the same trials for both models: they ran paired
        mb = np.take_along_axis(resampled_p50(base_trials), pick, axis=1)
        ms = np.take_along_axis(resampled_p50(slim_trials), pick, axis=1)
        boots = np.median(mb, axis=1) / np.median(ms, axis=1)
        what = "samples of 1 trial" if n == 1 else f"{n} trials (paired) and the samples within each"
        method = f"median of per-trial p50, two-level bootstrap over {what} ({n_boot} resamples)"
    lo, hi = (float(v) for v in np.quantile(boots, [lo_q, hi_q]))
    ratios = (b / s).tolist()
    return {
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "level": level,
        "method": method,
        "per_trial": ratios,
        "spread": float(max(ratios) - min(ratios)) if ratios else 0.0,
    }
