"""The tiny world's problem generator: determinism, disjoint splits, correct answers, families
and the two solution styles."""
import random

import pytest

from opd.io import flat_view
from opd.grading.extract import last_boxed
from opd.grading.verify import is_correct
from opd.world.problems import (Problem, ProblemSpec, evaluate, from_info, make_splits, sample_problem,
                                to_frame)
from opd.world.styles import render


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
        make_splits(ProblemSpec(min_ops=1, max_ops=1, max_operand=3), {"train": 100}, seed=0)
    with pytest.raises(ValueError, match="min_ops"):
        ProblemSpec(min_ops=3, max_ops=1)
    with pytest.raises(ValueError, match="family"):
        sample_problem(random.Random(0), ProblemSpec(), "div")
    with pytest.raises(ValueError, match="style"):
        render(Problem((1, 2), ("+",), 0), "verbose", None)


def test_hand_worked_chains_of_each_family():
    assert evaluate((7, 6, 3), ("*", "+")) == [7, 42, 45]
    assert evaluate((47, 6, 3), ("mod", "+")) == [47, 5, 8]
    assert evaluate((7, 5, 3), ("+", "-")) == [7, 12, 9]
    p = Problem((7, 6, 3), ("*", "+"), 0, "mul")
    assert p.expr == "7 * 6 + 3" and p.answer == 45
    assert render(p, "terse", None) == "7 * 6 = 42. 42 + 3 = 45. The answer is \\boxed{45}."
    assert render(p, "think", None) == ("<think>\nStart with 7. 7 times 6 is 42. 42 plus 3 is 45. Done.\n</think>"
                                        "\n\nThe answer is \\boxed{45}.")


def test_families_follow_the_split_lists_and_survive_the_frame():
    fams = {"train": ["add", "mul", "mod"], "eval": ["mul"]}
    s = make_splits(ProblemSpec(1, 4, 9), {"train": 300, "eval": 40}, seed=0, families=fams)
    assert {p.family for p in s["train"]} == {"add", "mul", "mod"}
    assert {p.family for p in s["eval"]} == {"mul"}
    for p in s["train"]:
        first = p.ops[0]
        assert {"add": first in "+-", "mul": first == "*", "mod": first == "mod"}[p.family]
        assert min(p.values) >= 0
    df = to_frame(s["train"], "train")
    back = [from_info(e) for e in df["extra_info"]]
    assert [(b.operands, b.ops, b.family) for b in back] == [(p.operands, p.ops, p.family) for p in s["train"]]
    # families have their own question templates (what teacher-aligned selection tells apart)
    questions = {f: {p.question.split(" ")[0] for p in s["train"] if p.family == f} for f in ("mul", "mod")}
    assert not questions["mul"] & questions["mod"]


@pytest.mark.parametrize("style", ["terse", "think"])
def test_styles_vary_in_phrasing_but_always_box_the_answer(style):
    s = make_splits(ProblemSpec(2, 4, 9), {"train": 60}, seed=2, families={"train": ["add", "mul", "mod"]})["train"]
    rng = random.Random(0)
    for p in s:
        texts = {render(p, style, rng) for _ in range(8)}
        assert len(texts) > 1                              # real uncertainty: several valid phrasings
        for t in texts:
            assert last_boxed(t) == str(p.answer)
            assert is_correct(t, str(p.answer))
            assert t.startswith("<think>") == (style == "think")



def test_a_model_can_see_a_share_of_a_family(tmp_path):
    """``models.<m>.world.families`` as a mapping: that share of the family's pretraining
    problems, the first ones (a smaller share is a subset of a larger one); a list keeps all."""
    from opd.io import write_parquet
    from opd.stages.world import read_corpus
    from opd.world.problems import to_frame

    s = make_splits(ProblemSpec(1, 3, 9), {"pretrain": 400}, seed=0, families={"pretrain": ["add", "mul"]})
    path = tmp_path / "pretrain.parquet"
    write_parquet(to_frame(s["pretrain"], "pretrain"), path)
    n_mul = sum(p.family == "mul" for p in s["pretrain"])
    _, every = read_corpus(str(path), ["add", "mul"])
    assert len(every) == 400
    _, some = read_corpus(str(path), {"add": 1.0, "mul": 0.25})
    _, fewer = read_corpus(str(path), {"add": 1.0, "mul": 0.1})
    assert sum(p.family == "mul" for p in some) == round(0.25 * n_mul)
    assert sum(p.family == "add" for p in some) == 400 - n_mul
    assert {p.operands for p in fewer if p.family == "mul"} < {p.operands for p in some if p.family == "mul"}
    with pytest.raises(ValueError, match="no problem of the families"):
        read_corpus(str(path), {"mod": 1.0})
