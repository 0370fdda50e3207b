"""The mechanism metric set on hand-built distributions whose values are worked out by hand."""
import math

import pytest
import torch

from opd.objectives import mechanism_metrics, token_mechanism_stats
from opd.objectives.topk import LOGP_FLOOR

F64 = torch.float64
# Row A: Ks = {0, 1}, Kt = {1, 2} (k = 2): shared {1}, student-only {0}, teacher-only {2}
P_A = [0.4, 0.3, 0.1, 0.1, 0.05, 0.05]
Q_A = [0.1, 0.5, 0.2, 0.1, 0.05, 0.05]
# Row B: Ks = {0, 1}, Kt = {3, 2}: nothing shared, two student-only and two teacher-only tokens
P_B = [0.5, 0.3, 0.15, 0.05, 0.0, 0.0]
Q_B = [0.1, 0.2, 0.3, 0.4, 0.0, 0.0]


def logp(rows):
    return torch.tensor(rows, dtype=F64).log()


def H(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_per_token_stats_by_hand():
    st = token_mechanism_stats(logp([P_A, P_B]), logp([Q_A, Q_B]), 2)
    # r_c = log q_c - log p_c
    expect_a = {
        "overlap_ratio": 0.5, "student_mass_shared": 0.3, "teacher_mass_shared": 0.5,
        "reward_shared_sum": math.log(0.5 / 0.3), "n_shared": 1,
        "reward_student_only_sum": math.log(0.1 / 0.4), "n_student_only": 1,
        "reward_teacher_only_sum": math.log(0.2 / 0.1), "n_teacher_only": 1,
        # in Ks: r_0 = log(1/4) (min), r_1 = log(5/3) (max)
        "reward_topk_max": math.log(5 / 3), "student_p_at_reward_max": 0.3, "teacher_p_at_reward_max": 0.5,
        "reward_topk_min": math.log(1 / 4), "student_p_at_reward_min": 0.4, "teacher_p_at_reward_min": 0.1,
        "student_p_top1": 0.4, "teacher_p_top1": 0.5,
        "student_entropy": H(P_A), "teacher_entropy": H(Q_A),
    }
    expect_b = {
        "overlap_ratio": 0.0, "student_mass_shared": 0.0, "teacher_mass_shared": 0.0,
        "student_mass_own_topk": 0.8, "teacher_mass_own_topk": 0.7,
        "student_mass_on_teacher_topk": 0.2, "teacher_mass_on_student_topk": 0.3,
        "reward_shared_sum": 0.0, "n_shared": 0,
        "reward_student_only_sum": math.log(0.2) + math.log(2 / 3), "n_student_only": 2,
        "reward_teacher_only_sum": math.log(8) + math.log(2), "n_teacher_only": 2,
        "reward_topk_max": math.log(2 / 3), "student_p_at_reward_max": 0.3, "teacher_p_at_reward_max": 0.2,
        "reward_topk_min": math.log(0.2), "student_p_at_reward_min": 0.5, "teacher_p_at_reward_min": 0.1,
        "student_p_top1": 0.5, "teacher_p_top1": 0.4,
    }
    for row, expect in ((0, expect_a), (1, expect_b)):
        for name, value in expect.items():
            assert st[name][row].item() == pytest.approx(value, abs=1e-12), (row, name)


def test_teacher_only_token_outside_the_student_support_uses_the_floor():
    p = [0.5, 0.5, 0.0, 0.0]            # the student gives token 2 no probability
    q = [0.3, 0.1, 0.6, 0.0]            # Kt = {2, 0}: token 2 is teacher-only
    st = token_mechanism_stats(logp([p]), logp([q]), 2)
    assert st["n_teacher_only"].item() == 1
    assert st["reward_teacher_only_sum"].item() == pytest.approx(math.log(0.6) - LOGP_FLOOR)
    assert st["reward_shared_sum"].item() == pytest.approx(math.log(0.3 / 0.5))
    assert all(torch.isfinite(v).all() for v in st.values())


def test_class_rewards_are_pooled_over_token_candidate_pairs():
    st = token_mechanism_stats(logp([P_A, P_B]), logp([Q_A, Q_B]), 2)
    m = mechanism_metrics({k: v[None] for k, v in st.items()}, torch.ones(1, 2), chunk_tokens=None)
    assert m["opd/reward_shared"] == pytest.approx(math.log(5 / 3))                       # 1 pair
    assert m["opd/reward_student_only"] == pytest.approx(math.log(1 / 30) / 3)           # 3 pairs
    assert m["opd/reward_teacher_only"] == pytest.approx(5 * math.log(2) / 3)            # 3 pairs
    assert m["opd/reward_topk_max"] == pytest.approx(math.log(10 / 9) / 2)
    assert m["opd/student_p_at_reward_min"] == pytest.approx(0.45)
    assert m["opd/entropy_gap"] == pytest.approx((H(Q_A) - H(P_A) + H(Q_B) - H(P_B)) / 2)
    assert not any(k.startswith(("opd/n_", "opd/reward_shared_sum")) for k in m)
    # no shared pair anywhere: the shared-class mean is left out, not reported as 0
    only_b = mechanism_metrics({k: v[None, 1:] for k, v in st.items()}, torch.ones(1, 1))
    assert "opd/reward_shared" not in only_b and "opd/reward_student_only" in only_b


def test_absolute_chunks_count_response_tokens_only():
    # row 0: response tokens at columns 0..6 (positions 0..6); row 1 at columns 3..6 (positions 0..3)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]])
    v = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7], [0, 0, 0, 10, 20, 30, 40]])
    m = mechanism_metrics({"overlap_ratio": v, "teacher_entropy": v * 2, "n_shared": v}, mask,
                          n_buckets=0, chunk_tokens=3)
    # chunk 0: positions 0-2 -> {1, 2, 3} and {10, 20, 30}; chunk 1: 3-5 -> {4, 5, 6} and {40}; chunk 2: {7}
    assert m["opd/overlap_ratio_chunk0"] == pytest.approx(66 / 6)
    assert m["opd/overlap_ratio_chunk1"] == pytest.approx(55 / 4)
    assert m["opd/overlap_ratio_chunk2"] == pytest.approx(7.0)
    assert "opd/overlap_ratio_chunk3" not in m and not any("bucket" in k for k in m)
    assert m["opd/teacher_entropy_chunk1"] == pytest.approx(2 * 55 / 4)
    assert "opd/n_shared_chunk0" not in m and "opd/n_shared" not in m   # counts are not metrics
    one = mechanism_metrics({"overlap_ratio": v}, mask, n_buckets=0, chunk_tokens=100)
    assert one["opd/overlap_ratio_chunk0"] == pytest.approx(one["opd/overlap_ratio"])


def test_buckets_cover_reward_and_entropies():
    mask = torch.ones(1, 8)
    r = torch.arange(8.0)[None]
    m = mechanism_metrics({"reward": r, "student_entropy": r + 1}, mask, n_buckets=4, chunk_tokens=None)
    assert [m[f"opd/reward_bucket{i}"] for i in range(4)] == [0.5, 2.5, 4.5, 6.5]
    assert m["opd/student_entropy_bucket3"] == 7.5
    assert "opd/entropy_gap" not in m                   # needs both entropies
