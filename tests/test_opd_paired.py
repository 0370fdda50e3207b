"""The paired comparison of iteration 10 (benchmarks/opd_paired.py), on hand-worked values."""
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from opd_paired import paired_gap, pool  # noqa: E402


def test_paired_gap_by_hand():
    # d = [0.5, 0, 0.5]: mean 1/3, sd sqrt(1/12); over a teacher-student span of 0.5
    a = pd.Series([1.0, 0.5, 0.75], index=["p1", "p2", "p3"])
    b = pd.Series([0.25, 0.5, 0.5], index=["p3", "p2", "p1"])   # another order: matched by id
    d, se = paired_gap(a, b, student=0.5, teacher=1.0)
    assert d == pytest.approx(2 / 3)
    assert se == pytest.approx(math.sqrt(1 / 12) / math.sqrt(3) / 0.5)


def test_paired_gap_refuses_other_problems_and_no_gap():
    a = pd.Series([1.0, 0.5], index=["p1", "p2"])
    with pytest.raises(ValueError, match="different problems"):
        paired_gap(a, pd.Series([1.0, 0.5], index=["p1", "p9"]), 0.2, 0.9)
    with pytest.raises(ValueError, match="does not beat"):
        paired_gap(a, a, 0.9, 0.9)


def test_pool_by_hand():
    d, se = pool([(0.3, 0.1), (0.0, 0.2), (0.6, 0.2)])
    assert d == pytest.approx(0.3)
    assert se == pytest.approx(math.sqrt(0.01 + 0.04 + 0.04) / 3)
