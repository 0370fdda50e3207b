"""Figure helpers: smoothing, the summary table (with gap recovered), the experiment curves from
grade files, the mechanism figures from hand-built probe artifacts, and the objective ablation."""
import json
import math

import pytest

from opd.figures import (ENTROPY_PANELS, OVERLAP_PANELS, REWARD_PANELS, ablation_groups, experiment_curve,
                         first_and_last, gap_recovered, load_probes, moving_average, plot_ablation,
                         plot_accuracy, plot_by_position, plot_extremes, plot_vs_step, probe_benchmark,
                         probe_steps, summary_table)


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


def test_gap_recovered_per_opd_checkpoint(tmp_path):
    grades = {"student": 0.5, "teacher": 0.9, "a.step0010": 0.6, "a.step0020": 0.7, "b.sft": 0.55,
              "g.step0010": 0.8}
    kinds = {"student": ("base", "student", None), "teacher": ("base", "teacher", None),
             "a.step0010": ("step", "a", 10), "a.step0020": ("step", "a", 20), "b.sft": ("sft", "b", None),
             "g.step0010": ("step", "g", 10)}
    paths = []
    for model, score in grades.items():
        p = tmp_path / f"{model}.json"
        p.write_text(json.dumps({"model": model, "benchmark": "x", "mean_score": score}))
        paths.append(str(p))
    exps = {"a": {"method": "opd", "student": "student", "teacher": "teacher"},
            "b": {"method": "opd", "student": "student", "teacher": "teacher", "cold_start": True},
            "g": {"method": "grpo", "student": "student"}}
    t = summary_table(paths, kinds, exps).set_index("model")["gap_recovered"]
    assert t["a.step0010"] == pytest.approx(0.25) and t["a.step0020"] == pytest.approx(0.5)
    assert t["b.sft"] == pytest.approx(0.125)
    assert math.isnan(t["student"]) and math.isnan(t["teacher"]) and math.isnan(t["g.step0010"])
    assert math.isnan(gap_recovered(0.7, 0.5, 0.5))                 # the teacher is no better


def test_ablation_groups_need_an_objective_difference_only():
    base = {"method": "opd", "student": "s", "teacher": "t"}
    obj = {"top_k": 16, "strategy": "only_stu", "weight_mode": "student_p", "chunk_size": 8}
    exps = {"a": base, "b": dict(base, train={"objective": {"strategy": "union"}}),
            "c": dict(base, cold_start=True), "d": dict(base, train={"lr": 1.0}),
            "e": dict(base, train={"objective": {"top_k": 4}}), "g": {"method": "grpo", "student": "s"}}
    resolved = {n: {"lr": 1e-4, "objective": dict(obj)} for n in exps}
    resolved["b"]["objective"]["strategy"] = "union"
    resolved["d"]["lr"] = 1.0
    resolved["e"]["objective"]["top_k"] = 4
    assert ablation_groups(exps, resolved) == [["a", "b", "e"]]
    resolved["b"]["objective"]["strategy"] = "only_stu"
    resolved["e"]["objective"]["top_k"] = 16
    assert ablation_groups(exps, resolved) == []                    # same objective: no ablation


def write_probe(root, exp, model, step, rng, shift):
    """A probe summary and per-token table as the probe stage writes them."""
    import numpy as np
    import pandas as pd

    n = 40
    frame = pd.DataFrame({"response": np.repeat(np.arange(4), n // 4), "problem_id": "p", "sample_idx": 0,
                          "position": np.tile(np.arange(n // 4), 4), "length": n // 4, "token_id": 1,
                          "token_logp": -1.0})
    for col in ("overlap_ratio", "student_mass_shared", "reward", "teacher_entropy", "reward_topk_max",
                "student_p_at_reward_max"):
        frame[col] = rng.random(n) + shift
    d = root / exp / model
    d.mkdir(parents=True)
    frame.to_parquet(d / "x.parquet")
    metrics = {"opd/overlap_ratio": 0.3 + shift, "opd/student_mass_shared": 0.5, "opd/teacher_mass_shared": 0.4,
               "opd/student_entropy": 1.0, "opd/teacher_entropy": 1.2, "opd/entropy_gap": 0.2,
               "opd/reward_shared": 0.1, "opd/reward_student_only": -1.0, "opd/reward_teacher_only": 2.0}
    (d / "x.json").write_text(json.dumps({"experiment": exp, "model": model, "benchmark": "x", "metrics": metrics}))
    return str(d / "x.json")


def test_mechanism_figures_from_metrics_and_probes(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    probes = [write_probe(tmp_path / "probe", "a", m, s, rng, 0.1 * s) for m, s in
              (("student", 0), ("a.step0010", 1), ("a.step0020", 2))]
    kinds = {"student": ("base", "student", None), "a.step0010": ("step", "a", 10),
             "a.step0020": ("step", "a", 20)}
    exps = {"a": {"method": "opd", "student": "student", "teacher": "teacher"}}
    summaries = load_probes(probes)
    steps = probe_steps(summaries, kinds, exps, probe_benchmark(summaries, "x"))
    assert [s for s, _ in steps["a"]] == [0, 10, 20]
    training = {"a": [{"step": i, "opd/overlap_ratio": 0.3 + 0.01 * i, "opd/student_mass_shared": 0.5,
                       "opd/teacher_mass_shared": 0.5} for i in range(1, 21)]}
    for panels in (OVERLAP_PANELS, ENTROPY_PANELS, REWARD_PANELS):
        out = tmp_path / "f.png"
        assert plot_vs_step(panels, training, steps, out, "t")
        assert Image.open(out).size[0] > 800
    pairs = first_and_last(steps)
    assert pairs["a"][0]["model"] == "student" and pairs["a"][1]["model"] == "a.step0020"
    for fn in (plot_by_position, plot_extremes):
        assert fn(pairs, tmp_path / "g.png") and not fn({}, tmp_path / "h.png")
        assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"        # the placeholder
    assert not plot_vs_step(OVERLAP_PANELS, {"g": [{"step": 1, "train/loss": 0.0}]}, {}, tmp_path / "i.png", "t")
    assert plot_ablation([["a", "b"]], {"a": {"objective": {}}, "b": {"objective": {"strategy": "union"}}},
                         {"a": 0.5, "b": 0.6}, {"a": 0.7, "b": float("nan")}, tmp_path / "j.png")
    assert not plot_ablation([], {}, {}, {}, tmp_path / "k.png")
