"""Figure helpers: smoothing, the summary table and the experiment curves from grade files."""
import json

from opd.figures import experiment_curve, moving_average, plot_accuracy, summary_table


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0], 5) == [2.0]


def test_curves_start_at_the_starting_model(tmp_path):
    grades = {"student": 0.5, "teacher": 0.9, "a.step0010": 0.6, "a.step0020": 0.7,
              "b.sft": 0.55, "b.step0010": 0.65}
    kinds = {"student": ("base", "student", None), "teacher": ("base", "teacher", None),
             "a.step0010": ("step", "a", 10), "a.step0020": ("step", "a", 20),
             "b.sft": ("sft", "b", None), "b.step0010": ("step", "b", 10)}
    paths = []
    for model, score in grades.items():
        p = tmp_path / f"{model}.json"
        p.write_text(json.dumps({"model": model, "benchmark": "x", "mean_score": score,
                                 "best_score": score}))
        paths.append(str(p))
    table = summary_table(paths, kinds)
    exps = {"a": {"method": "opd", "student": "student", "teacher": "teacher"},
            "b": {"method": "opd", "student": "student", "teacher": "teacher", "cold_start": True}}
    a = experiment_curve(table, "a", exps["a"], "x")
    assert a["step"].tolist() == [0, 10, 20] and a["mean_score"].tolist() == [0.5, 0.6, 0.7]
    b = experiment_curve(table, "b", exps["b"], "x")
    assert b["mean_score"].tolist() == [0.55, 0.65]  # a cold start begins at its SFT model
    out = tmp_path / "fig.png"
    plot_accuracy(table, exps, "x", out)
    assert out.read_bytes()[:4] == b"\x89PNG"
