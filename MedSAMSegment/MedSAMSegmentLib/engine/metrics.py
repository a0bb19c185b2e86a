"""Overlap measure shared by propagation, the demo, benchmarks and tests."""

import numpy as np


def dice(a, b):
    """Dice coefficient of two masks (non-zero = inside); 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
