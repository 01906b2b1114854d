"""Is a change in retrieval quality real? A paired test over per-query scores.

Two runs of the same queries (a fusion variant and the default, or a code change and a saved
baseline) are compared query by query: the statistic is the mean of the per-query differences
(nDCG@10 of B minus A). Under the null hypothesis that A and B are exchangeable, each
difference is as likely to have either sign, so the paired randomisation (sign-flip permutation)
test flips the signs at random `permutations` times and counts how often the mean is at least as
far from 0 as the observed one (two-sided; the observed assignment is counted, so p > 0). A
fixed seed makes the p-value repeatable. The bootstrap resamples queries with replacement for a
percentile confidence interval of the mean difference. Queries judged in only one run are left
out (the comparison says how many were paired). Smucker, Allan & Carterette (CIKM 2007)
recommend this test for IR metrics; it needs only numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

PERMUTATIONS = 10_000
BOOTSTRAP = 10_000
SEED = 20261202
_BLOCK = 1_000  # permutations per block: memory stays at block x queries


@dataclass(frozen=True)
class Comparison:
    queries: int
    mean_a: float
    mean_b: float
    delta: float  # mean(b - a)
    p_value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return {"queries": self.queries, "mean_a": round(self.mean_a, 4), "mean_b": round(self.mean_b, 4),
                "delta": round(self.delta, 4), "p_value": round(self.p_value, 4),
                "ci95": [round(self.ci_low, 4), round(self.ci_high, 4)]}

    def describe(self) -> str:
        return f"{self.delta:+.3f} (95% CI {self.ci_low:+.3f}..{self.ci_high:+.3f}), {format_p(self.p_value)}"


def format_p(p: float) -> str:
    """The smallest p of 10,000 permutations is 1/10,001: below 0.001, say only that."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _differences(a, b) -> np.ndarray:
    """b - a, with float noise (the same nDCG summed in another order) set to exactly 0."""
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    diffs[np.abs(diffs) < 1e-12] = 0.0
    return diffs


def paired_randomisation_test(a, b, permutations: int = PERMUTATIONS, seed: int = SEED) -> float:
    """Two-sided p-value of mean(b - a) != 0 by random sign flips of the paired differences."""
    diffs = _differences(a, b)
    if diffs.ndim != 1:
        raise ValueError("expected two equally long sequences of per-query scores")
    if diffs.size == 0:
        return 1.0
    observed = abs(diffs.mean())
    tolerance = 1e-12  # a flipped zero is the same mean
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, _BLOCK):
        n = min(_BLOCK, permutations - start)
        signs = rng.integers(0, 2, size=(n, diffs.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ diffs) / diffs.size
        extreme += int(np.count_nonzero(means >= observed - tolerance))
    return (extreme + 1) / (permutations + 1)


def bootstrap_ci(a, b, resamples: int = BOOTSTRAP, seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(b - a) over queries resampled with replacement."""
    diffs = _differences(a, b)
    if diffs.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _BLOCK):
        n = min(_BLOCK, resamples - start)
        means[start:start + n] = diffs[rng.integers(0, diffs.size, size=(n, diffs.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def compare(a: Mapping[str, float], b: Mapping[str, float], permutations: int = PERMUTATIONS,
            seed: int = SEED) -> Comparison:
    """B against A on the queries both scored (query id -> score)."""
    common = [q for q in a if q in b]
    xa = np.array([a[q] for q in common], dtype=np.float64)
    xb = np.array([b[q] for q in common], dtype=np.float64)
    low, high = bootstrap_ci(xa, xb, seed=seed)
    return Comparison(len(common), float(xa.mean()) if common else 0.0, float(xb.mean()) if common else 0.0,
                      float(_differences(xa, xb).mean()) if common else 0.0,
                      paired_randomisation_test(xa, xb, permutations, seed), low, high)
