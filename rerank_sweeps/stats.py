"""Paired comparisons of two systems on the same queries: one test, one interval, one p.

Every paired difference in this package (table.md, the report, docs/results.md) comes from
`paired_comparison`, so the same comparison prints the same numbers everywhere.

The test family is the paired sign-flip (randomization) test: under H0(delta) the per-query
differences d_i - delta are symmetric about 0, so flipping their signs at random leaves the
distribution of |sum(d_i - delta)| unchanged. Two-sided throughout.

- hit (0/1 per query): the p-value is the exact McNemar test, i.e. the exact two-sided
  binomial sign test on the discordant queries (b won, c lost). It is the sign-flip test at
  delta = 0 computed exactly (flipping a concordant query's 0 changes nothing). The interval's
  other deltas are tested exactly as well (`_hit_flip_p`), so nothing about a hit comparison
  depends on a random draw.
- MRR, nDCG (continuous): the sign-flip test with `permutations` random sign vectors drawn
  from a seed derived from the comparison itself (its sorted differences and metric), so the
  same per-query data gives the same numbers in any process and in any query order; with few
  queries (2^n <= permutations) every sign vector is enumerated instead. A Monte Carlo p is
  (1 + reached) / (1 + B); when no permutation reached the observed value it prints as
  `p<1/B`, since the p is then only known to be below that.
- The 95% interval is the test-inversion interval of the same test: every delta whose test
  does not reject at 0.05, found by bisection on each side of the observed mean and clipped
  to the range a difference of two [0, 1] metrics can take ([-1, 1]). At delta = 0 the
  bisection uses the very p reported, so the interval contains 0 exactly when p >= 0.05: an
  interval and a p-value of one comparison cannot disagree.

`paired_by_query` pairs two systems' per-query values by query id (the results page compares
two runs from their TREC files this way). `holm` is Holm's step-down adjustment, applied within a family of comparisons (docs/results.md
uses each finding's comparisons as its family).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
PERMUTATIONS = 10_000  # sign vectors for MRR/nDCG: a Monte Carlo p floor of 1e-4
MCNEMAR, SIGN_FLIP = "mcnemar-exact", "sign-flip"
BOUNDS = (-1.0, 1.0)  # a difference of two metrics in [0, 1]
_TOL = 1e-10  # float slack when comparing a permuted statistic with the observed one
_RESOLUTION = 1e-6  # bisection stops here: 1e-4 points, below any printed digit
_CHUNK = 2000  # sign vectors drawn per block (bounds memory for many queries)


@dataclass(frozen=True)
class PairedResult:
    """The paired difference mean(a - b) over n queries, its 95% interval and two-sided p.

    `test` is MCNEMAR (hit) or SIGN_FLIP; `permutations` the sign vectors behind a
    sign-flip p (2^n when enumerated, 0 for an exact McNemar p); `won`/`lost` the discordant
    queries of a hit comparison (a hit and b missed / the reverse); `p_floor` that no
    permutation reached the observed value, so the p is only known to be below 1/B.
    """

    diff: float
    low: float
    high: float
    p_value: float
    n: int
    test: str = SIGN_FLIP
    permutations: int = 0
    won: int | None = None
    lost: int | None = None
    p_floor: bool = False

    @property
    def significant(self) -> bool:
        """p < 0.05 (unadjusted)."""
        return self.p_value < ALPHA

    def p_text(self) -> str:
        """`p=0.012`, or `p<0.0001` when no permutation reached the observed value."""
        return p_text(self.p_value, self.permutations if self.p_floor else None)

    def text(self, adjusted: float | None = None) -> str:
        """'+3.5 [+0.5, +6.5], p=0.02' in points, with the Holm-adjusted p when given."""
        out = (
            f"{100 * self.diff:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}], "
            f"{self.p_text()}"
        )
        if adjusted is not None:
            out += f", Holm {_p_number(adjusted)}"
        if self.won is not None and self.lost is not None:
            out += f" ({self.won} won, {self.lost} lost)"
        return out

    def as_record(self) -> dict[str, Any]:
        """The record.json form: `diff`, `interval`, `p_value` (as before) plus the test used."""
        out: dict[str, Any] = {
            "diff": self.diff,
            "interval": [self.low, self.high],
            "p_value": self.p_value,
            "test": self.test,
            "permutations": self.permutations,
            "p_floor": self.p_floor,
            "n": self.n,
        }
        if self.won is not None:
            out["discordant"] = [self.won, self.lost]
        return out


def _p_number(p: float) -> str:
    return f"{p:.3g}"


def p_text(p_value: float, floor_permutations: int | None = None) -> str:
    """A p-value as printed everywhere: `p=0.012`; `p<0.0001` (1/B) for a Monte Carlo floor."""
    if floor_permutations:
        return f"p<{_p_number(1 / floor_permutations)}"
    return f"p={_p_number(p_value)}"


def record_p_text(stats: dict[str, Any]) -> str | None:
    """`p_text` of a record.json "paired" entry (older records carry only `p_value` or `p`)."""
    p = stats.get("p_value", stats.get("p"))
    if p is None:
        return None
    return p_text(float(p), stats.get("permutations") if stats.get("p_floor") else None)


def mcnemar_exact_p(won: int, lost: int) -> float:
    """Exact two-sided McNemar p: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1.

    Computed with integers (Python's int division rounds correctly), so it is exact up to the
    final float. No discordant query (b = c = 0) gives 1.
    """
    if won < 0 or lost < 0:
        raise ValueError(f"discordant counts must be >= 0, got {won}, {lost}")
    m = won + lost
    tail = sum(math.comb(m, i) for i in range(min(won, lost) + 1))
    return min(1.0, 2 * tail / 2**m)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th (0-based) of m is multiplied by m - i, capped at 1, and made
    non-decreasing (a running maximum), so a smaller raw p never gets a larger adjusted one.
    Rejecting where adjusted p < alpha controls the family-wise error rate at alpha.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def comparison_seed(diffs: np.ndarray, metric: str, permutations: int, seed: int = 0) -> int:
    """A seed from the comparison itself: its sorted differences (so query order does not
    matter), metric, permutation count and an optional extra seed."""
    canonical = np.round(np.sort(np.asarray(diffs, dtype=np.float64)), 12) + 0.0  # no -0.0
    head = json.dumps([metric, int(permutations), int(seed), len(canonical)]).encode()
    return zlib.crc32(canonical.tobytes(), zlib.crc32(head))


def paired_comparison(
    diffs: Sequence[float] | np.ndarray,
    metric: str,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> PairedResult:
    """Difference, 95% test-inversion interval and two-sided p of per-query paired `diffs`.

    `metric` "hit" (diffs in {-1, 0, 1}) uses the exact McNemar p and an exact interval;
    any other metric the sign-flip test with `permutations` sign vectors (see the module
    docstring for the construction and why interval and p always agree).
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        raise ValueError("a paired comparison needs at least one query")
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite")
    mean = math.fsum(d.tolist()) / n
    bounds = (min(BOUNDS[0], float(d.min())), max(BOUNDS[1], float(d.max())))
    if metric == "hit":
        if not np.all(np.isin(d, (-1.0, 0.0, 1.0))):
            raise ValueError("hit differences must be -1, 0 or 1")
        won, lost = int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))
        p = mcnemar_exact_p(won, lost)
        tables = _HitTables(won, lost, n - won - lost)
        low, high = _invert(tables.p, mean, p, bounds)
        return PairedResult(mean, low, high, p, n, MCNEMAR, 0, won, lost)
    # Sorted: the drawn sign vectors meet the differences in one canonical order, so the
    # query order of the caller cannot change the numbers.
    canonical = np.sort(d)
    flips = _SignFlips(canonical, permutations, comparison_seed(d, metric, permutations, seed))
    p, floor = flips.p(0.0), flips.reached(0.0) == 0 and not flips.exact
    low, high = _invert(flips.p, mean, p, bounds)
    return PairedResult(mean, low, high, p, n, SIGN_FLIP, flips.count, p_floor=floor)


def paired_by_query(
    a: dict[str, float],
    b: dict[str, float],
    metric: str = "hit",
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> PairedResult:
    """`paired_comparison` of mean(a - b) over the query ids both score (exact McNemar for
    hit); the same per-query values give the evaluation's numbers whatever their order."""
    qids = sorted(set(a) & set(b))
    if not qids:
        raise ValueError("the two runs share no query")
    diffs = np.asarray([a[q] - b[q] for q in qids], dtype=np.float64)
    return paired_comparison(diffs, metric, permutations, seed)


def _invert(
    p_at: Callable[[float], float], mean: float, p0: float, bounds: tuple[float, float]
) -> tuple[float, float]:
    """The interval {delta : p_at(delta) >= ALPHA} by bisection on each side of `mean`.

    The statistic is 0 at delta = mean (p = 1), so `mean` is inside. Where 0 lies on a side,
    it is placed by `p0` (the reported p) before bisecting, so the interval holds 0 exactly
    when p0 >= ALPHA. The returned ends are accepted points.
    """
    ends = []
    for bound in bounds:
        inside, outside = mean, None
        if (bound < 0.0 < mean) or (mean < 0.0 < bound):
            if p0 < ALPHA:
                outside = 0.0
            else:
                inside = 0.0
        if outside is None:
            if inside == bound or p_at(bound) >= ALPHA:
                ends.append(bound)
                continue
            outside = bound
        while abs(outside - inside) > _RESOLUTION:
            mid = (inside + outside) / 2
            if p_at(mid) >= ALPHA:
                inside = mid
            else:
                outside = mid
        ends.append(inside)
    return ends[0], ends[1]


class _SignFlips:
    """Sign-flip null of one set of differences: for each sign vector s, mean(s * d) and
    mean(s), so the statistic |mean(s * (d - delta))| at any delta costs O(B)."""

    def __init__(self, d: np.ndarray, permutations: int, seed: int) -> None:
        n = d.size
        self.observed_mean = math.fsum(d.tolist()) / n
        # Few queries: every sign vector, an exact test (the identity is one of them).
        self.exact = n < 63 and 2**n <= permutations
        if self.exact:
            signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)
            self.a, self.b = signs @ d / n, signs.mean(axis=1)
        else:
            rng = np.random.default_rng(seed)
            a_parts, b_parts = [], []
            total = math.fsum(d.tolist())
            for start in range(0, permutations, _CHUNK):
                rows = min(_CHUNK, permutations - start)
                # Random bytes unpacked to bits (twice as fast as drawing signs); sign = 1 - 2 bit.
                packed = rng.integers(0, 256, size=(rows, (n + 7) // 8), dtype=np.uint8)
                bits = np.unpackbits(packed, axis=1, count=n)
                a_parts.append((total - 2.0 * (bits.astype(np.float64) @ d)) / n)
                b_parts.append(1.0 - 2.0 * bits.sum(axis=1) / n)
            self.a, self.b = np.concatenate(a_parts), np.concatenate(b_parts)
        self.count = int(self.a.size)

    def reached(self, delta: float) -> int:
        """How many sign vectors give a statistic >= the observed one at `delta`."""
        observed = abs(self.observed_mean - delta)
        null = np.abs(self.a - delta * self.b)
        return int(np.count_nonzero(null >= observed - _TOL))

    def p(self, delta: float) -> float:
        """Two-sided p of H0: d - delta symmetric about 0."""
        if self.exact:
            return self.reached(delta) / self.count
        return (self.reached(delta) + 1) / (self.count + 1)


class _HitTables:
    """The exact sign-flip test of 0/1 hit differences shifted by any delta.

    With b differences of +1, c of -1 and z of 0, the flipped sum of (d - delta) is
    (1 - delta) U - (1 + delta) V - delta W, where U, V, W are sums of b, c, z independent
    random signs. U and V are enumerated; W's tail is read from its binomial CDF.
    """

    def __init__(self, won: int, lost: int, zeros: int) -> None:
        self.won, self.lost, self.zeros = won, lost, zeros
        self.n = won + lost + zeros
        self.u = 2.0 * np.arange(won + 1) - won
        self.v = 2.0 * np.arange(lost + 1) - lost
        self.pu, self.pv = _binom_pmf(won), _binom_pmf(lost)
        self.cdf_w = np.cumsum(_binom_pmf(zeros))  # P(J <= j), W = 2J - z

    def _cdf(self, j: np.ndarray) -> np.ndarray:
        """P(J <= j) for integer arrays j (0 below the support, 1 above)."""
        out = np.where(j >= self.zeros, 1.0, self.cdf_w[np.clip(j, 0, self.zeros)])
        return np.where(j < 0, 0.0, out)

    def p(self, delta: float) -> float:
        """Exact two-sided p of H0: d - delta symmetric about 0."""
        observed = abs(self.won - self.lost - self.n * delta)
        t = observed - 1e-9 * max(1, self.n)
        if t <= 0:
            return 1.0
        a = ((1 - delta) * self.u[:, None] - (1 + delta) * self.v[None, :]) + delta * self.zeros
        weight = self.pu[:, None] * self.pv[None, :]
        e = 2 * delta  # the sum is a - e * J, J ~ Binomial(z, 1/2)
        if self.zeros == 0 or abs(e) < 1e-12:
            # No zero differences (J is always 0), or delta = 0 (J drops out): the sum is a.
            return float(min(1.0, np.sum(weight[np.abs(a) >= t])))
        # a - eJ >= t  or  a - eJ <= -t; J is an integer, so round the cut points with slack.
        slack = 1e-7
        if e > 0:
            upper = self._cdf(np.floor((a - t) / e + slack).astype(np.int64))
            lower = 1.0 - self._cdf(np.ceil((a + t) / e - slack).astype(np.int64) - 1)
        else:
            upper = 1.0 - self._cdf(np.ceil((a - t) / e - slack).astype(np.int64) - 1)
            lower = self._cdf(np.floor((a + t) / e + slack).astype(np.int64))
        return float(min(1.0, np.sum(weight * (upper + lower))))


def _binom_pmf(m: int) -> np.ndarray:
    """P(K = k), k = 0..m, for K ~ Binomial(m, 1/2), from log-gamma (no overflow for large m)."""
    from scipy.special import gammaln

    k = np.arange(m + 1, dtype=np.float64)
    return np.exp(gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1) - m * math.log(2.0))
