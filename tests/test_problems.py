"""The tiny world's problem generator: determinism, disjoint splits, correct answers."""
import pytest

from opd.io import flat_view
from opd.grading.extract import last_boxed
from opd.grading.verify import is_correct
from opd.world.problems import ProblemSpec, evaluate, make_splits, sample_problem, to_frame


def test_seeded_and_deterministic():
    a = make_splits(ProblemSpec(), {"train": 30, "eval": 10}, seed=3)
    b = make_splits(ProblemSpec(), {"train": 30, "eval": 10}, seed=3)
    c = make_splits(ProblemSpec(), {"train": 30, "eval": 10}, seed=4)
    assert [p.prompt for p in a["train"]] == [p.prompt for p in b["train"]]
    assert [p.prompt for p in a["train"]] != [p.prompt for p in c["train"]]


def test_splits_are_disjoint_and_unique():
    s = make_splits(ProblemSpec(), {"pretrain": 300, "train": 100, "eval": 50, "heldout": 50}, seed=0)
    keys = [(p.operands, p.ops) for split in s.values() for p in split]
    assert len(keys) == len(set(keys)) == 500


def test_answers_match_left_to_right_evaluation_and_never_go_negative():
    import random
    rng = random.Random(0)
    for _ in range(500):
        p = sample_problem(rng, ProblemSpec(min_ops=2, max_ops=4, max_operand=12))
        values = evaluate(p.operands, p.ops)
        assert min(values) >= 0
        assert 2 <= len(p.ops) <= 4 and max(p.operands) <= 12
        assert p.answer == eval(p.expr)  # + and - only: Python's left-to-right evaluation agrees


def test_solution_boxes_the_answer_and_grades_correct():
    s = make_splits(ProblemSpec(), {"train": 40}, seed=1)["train"]
    for p in s:
        assert last_boxed(p.solution) == str(p.answer)
        assert "\\boxed{}" in p.prompt
        assert is_correct(p.solution, str(p.answer))
        assert not is_correct(p.solution, str(p.answer + 1))


def test_frame_is_verl_rows():
    s = make_splits(ProblemSpec(), {"eval": 5}, seed=0)["eval"]
    df = to_frame(s, "eval")
    assert list(df.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    flat = flat_view(df)
    assert flat["problem_id"].is_unique
    assert flat["ground_truth"].tolist() == [str(p.answer) for p in s]
    assert df["prompt"][0][0]["role"] == "user"


def test_impossible_request_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct problems"):
        make_splits(ProblemSpec(min_ops=1, max_ops=1, max_operand=2), {"train": 100}, seed=0)
    with pytest.raises(ValueError, match="min_ops"):
        ProblemSpec(min_ops=3, max_ops=1)

