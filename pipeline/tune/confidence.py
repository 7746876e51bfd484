"""How sure an accuracy on a small validation set is: the Wilson score interval."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_interval(accuracy: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default).

    Better than ``p ± z·sqrt(p(1-p)/n)`` on small samples and near 0 or 1, where the normal
    approximation gives intervals past [0, 1] or of zero width. ``accuracy`` 1.0 on 80 faces
    gives (0.954, 1.0): "100%" there means "at least about 95%".

    Args:
        accuracy: the observed proportion correct, in [0, 1].
        n: how many examples it was measured on.
        z: the normal quantile (1.96 for 95%).

    Returns:
        (lower, upper) bounds; (0.0, 1.0) when ``n`` is 0.
    """
    if n <= 0:
        return 0.0, 1.0
    p = min(max(accuracy, 0.0), 1.0)
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At p = 0 or 1 the bound is exactly 0 or 1; floating point would give 1 - 1e-16.
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return low, high
