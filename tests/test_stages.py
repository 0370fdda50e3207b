"""Stage entry points on small real inputs: eval generation schema and grading with a verifier."""
import json

import pandas as pd

from opd.io import write_parquet
from opd.world.problems import to_frame
from opd.stages.evaluate import EVAL_COLUMNS, eval_generate, grade


def test_eval_generate_then_grade_with_model_verifier(tiny_models, tiny_tokenizer, tiny_problems, tmp_path):
    student, _ = tiny_models
    model_dir = tmp_path / "model"
    student.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    bench = tmp_path / "bench.parquet"
    write_parquet(to_frame(tiny_problems["eval"][:4], "eval"), bench)
    gens = tmp_path / "gens.parquet"
    eval_generate(model=str(model_dir), benchmark=str(bench), eval={"n": 3, "temperature": 0.7, "top_p": 0.95,
                                                                    "max_new_tokens": 8}, seed=0, generations=str(gens))
    df = pd.read_parquet(gens)
    assert list(df.columns) == list(EVAL_COLUMNS) and len(df) == 12
    assert sorted(df["sample_idx"].unique()) == [0, 1, 2]
    assert set(df["finish_reason"]) <= {"stop", "length"}
    # plant one correct and one rule-failed-but-boxed answer so both paths are exercised
    df.loc[0, "response"] = f"so \\boxed{{{df.loc[0, 'ground_truth']}}}"
    df.loc[1, "response"] = "so \\boxed{x}"
    write_parquet(df, gens)
    summary, verdicts = tmp_path / "g.json", tmp_path / "v.parquet"
    grade(generations=str(gens), grading={"workers": 1, "verifier_max_new_tokens": 4}, summary=str(summary),
          verdicts=str(verdicts), model="m", bench="b", verifier=str(model_dir))
    v = pd.read_parquet(verdicts)
    assert {"rule_correct", "judge_verdict", "correct"} <= set(v.columns)
    assert bool(v.loc[0, "rule_correct"]) and bool(v.loc[0, "correct"])
    assert not bool(v.loc[1, "rule_correct"])  # sent to the judge: it has a boxed answer
    # the verifier can only flip to correct on an explicit YES
    assert all(c or not r for c, r in zip(v["correct"], v["rule_correct"]))
    s = json.loads(summary.read_text())
    assert s["model"] == "m" and s["n_problems"] == 4 and s["n_samples"] == 3


def test_verdicts_keep_one_schema_when_no_answer_is_extracted(tiny_problems, tmp_path):
    # a model that boxes nothing gives a column of missing extractions; its verdicts file must
    # have the same column types as a model that answers (the backends compare schemas)
    base = to_frame(tiny_problems["eval"][:2], "eval")
    from opd.io import flat_view
    flat = flat_view(base)
    schemas = []
    for responses in (["no answer here", "none either"], ["\\boxed{1}", "so \\boxed{2}"]):
        gens = pd.DataFrame({"problem_id": flat["problem_id"], "sample_idx": 0, "response": responses,
                             "n_tokens": 3, "finish_reason": "stop", "prompt": flat["prompt"],
                             "ground_truth": flat["ground_truth"]})
        path, verdicts = tmp_path / "gens.parquet", tmp_path / "v.parquet"
        write_parquet(gens, path)
        grade(generations=str(path), grading={"workers": 1}, summary=str(tmp_path / "g.json"),
              verdicts=str(verdicts), model="m", bench="b", verifier=None)
        schemas.append(dict(pd.read_parquet(verdicts).dtypes.astype(str)))
    assert schemas[0] == schemas[1]
