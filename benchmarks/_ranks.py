"""Rank agreement of two scorings of the same layouts: Kendall's tau-b and Spearman's rho, with
ties handled the textbook way (tau-b's tie correction; rho as the Pearson correlation of mid-ranks),
and a bootstrap interval over the layouts. Pure Python, no scipy (it is not installed here)."""

from __future__ import annotations

import math
import random


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of paired scores; None when fewer than 2 pairs or a side is constant."""
    n = len(x)
    if n != len(y):
        raise ValueError("x and y differ in length")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denom == 0 else (concordant - discordant) / denom


def mid_ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the mid-ranks; None when a side is constant."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    rx, ry = mid_ranks(x), mid_ranks(y)
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def bootstrap_interval(
    x: list[float], y: list[float], stat=kendall_tau, *, draws: int = 2000, level: float = 0.9, seed: int = 0
) -> tuple[float, float] | None:
    """A percentile bootstrap interval of ``stat`` over the pairs (resampled with replacement)."""
    rng = random.Random(seed)
    n = len(x)
    values = []
    for _ in range(draws):
        pick = [rng.randrange(n) for _ in range(n)]
        v = stat([x[i] for i in pick], [y[i] for i in pick])
        if v is not None:
            values.append(v)
    if not values:
        return None
    values.sort()
    lo = values[int((1 - level) / 2 * (len(values) - 1))]
    hi = values[int((1 + level) / 2 * (len(values) - 1))]
    return lo, hi


def paired_difference_interval(
    a: list[float],
    b: list[float],
    reference: list[float],
    stat=kendall_tau,
    *,
    draws: int = 2000,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A percentile bootstrap interval of ``stat(a, reference) - stat(b, reference)``: two scorings
    of the same layouts, resampled together, so what they share cancels (an interval excluding 0
    says one ranks better than the other beyond the noise of which layouts were picked)."""
    rng = random.Random(seed)
    n = len(a)
    if not n == len(b) == len(reference):
        raise ValueError("a, b and reference differ in length")
    values = []
    for _ in range(draws):
        pick = [rng.randrange(n) for _ in range(n)]
        ref = [reference[i] for i in pick]
        va, vb = stat([a[i] for i in pick], ref), stat([b[i] for i in pick], ref)
        if va is not None and vb is not None:
            values.append(va - vb)
    if not values:
        return None
    values.sort()
    return values[int((1 - level) / 2 * (len(values) - 1))], values[int((1 + level) / 2 * (len(values) - 1))]
