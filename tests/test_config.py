"""Config checks that need no workflow run: model paths and teacher/student vocabularies."""
import copy

import pytest
import yaml

from opd.config import ConfigError, check_config, check_model_paths
from opd.experiments import experiment_config
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def with_paths(tmp_path, tiny_tokenizer, tiny_models, teacher_tok=None):
    cfg = copy.deepcopy(BASE)
    for name, model, tok in (("student", tiny_models[0], tiny_tokenizer),
                             ("teacher", tiny_models[1], teacher_tok or tiny_tokenizer),
                             ("teacher_think", tiny_models[1], tiny_tokenizer)):
        d = tmp_path / name
        model.save_pretrained(d)
        tok.save_pretrained(d)
        cfg["models"][name] = {"path": str(d)}
    return cfg


def test_default_config_passes():
    check_config(BASE)
    check_model_paths(BASE)


def test_missing_model_path_names_the_key(tmp_path):
    cfg = copy.deepcopy(BASE)
    cfg["models"]["teacher"] = {"path": str(tmp_path / "nope")}
    with pytest.raises(ConfigError, match=r"models\.teacher\.path"):
        check_model_paths(cfg)


def test_teacher_with_another_vocabulary_fails_before_any_job(tmp_path, tiny_tokenizer, tiny_models,
                                                              tiny_problems):
    from opd.world.models import train_tokenizer
    other = train_tokenizer([p.prompt for p in tiny_problems["pretrain"]] + ["xyz"], vocab_size=420)
    cfg = with_paths(tmp_path, tiny_tokenizer, tiny_models, teacher_tok=other)
    with pytest.raises(ConfigError, match=r"experiments\.opd\.teacher: .*do not share a vocabulary"):
        check_model_paths(cfg)
    same = with_paths(tmp_path / "same", tiny_tokenizer, tiny_models)
    check_model_paths(same)


def test_experiment_overrides_merge_into_defaults():
    merged = experiment_config(BASE, "grpo")
    assert merged["method"] == "grpo" and merged["n_samples"] == 8
    assert merged["objective"]["adv_estimator"] == "grpo"
    assert merged["objective"]["loss_agg_mode"] == BASE["train_defaults"]["objective"]["loss_agg_mode"]


BUDGET = ("steps", "save_every", "lr", "lr_warmup_steps", "prompts_per_step", "n_samples", "max_new_tokens")


def test_opd_experiments_share_one_budget_and_c1s_run_is_read_at_it():
    """The claims compare OPD runs with each other (C2 and C3 with C1, C6 aligned with random):
    every OPD experiment of the default config has one training budget, but C1's, which trains
    longer (docs/world.md, iteration 12) with everything else equal, and checkpoints at the
    others' last step, where ``opd.claims.at_budget`` reads it for C2 and C3."""
    exps = [e for e, spec in BASE["experiments"].items() if spec["method"] == "opd"]
    claimed = {spec["experiment"] for spec in BASE["claims"].values()}
    assert claimed <= set(exps) and len(exps) >= 6
    c1 = BASE["claims"]["C1"]["experiment"]
    budgets = {e: tuple(experiment_config(BASE, e)[k] for k in BUDGET) for e in exps if e != c1}
    assert len(set(budgets.values())) == 1, budgets
    others = dict(zip(BUDGET, next(iter(budgets.values()))))
    mine = experiment_config(BASE, c1)
    assert {k: mine[k] for k in BUDGET if k not in ("steps", "save_every")} == \
        {k: v for k, v in others.items() if k not in ("steps", "save_every")}
    assert mine["steps"] >= others["steps"] and others["steps"] % mine["save_every"] == 0


def test_same_tokenizer_with_another_lm_head_size_is_refused(tmp_path, tiny_tokenizer, tiny_models):
    """Real save_pretrained folders: the teacher's embeddings resized, its tokenizer unchanged."""
    import copy as _copy
    teacher = _copy.deepcopy(tiny_models[1])
    teacher.resize_token_embeddings(len(tiny_tokenizer) + 64)
    cfg = with_paths(tmp_path, tiny_tokenizer, (tiny_models[0], teacher))
    n = len(tiny_tokenizer)
    with pytest.raises(ConfigError, match=rf"experiments\.opd\.teacher: .*have the same tokenizer but "
                                          rf"LM heads of different sizes \(config.json vocab_size "
                                          rf"{n + 64} for the teacher, {n} for the student\)"):
        check_model_paths(cfg)


def test_default_config_inputs_pass_and_warn_of_nothing():
    from opd.checks import config_warnings
    from opd.config import check_inputs
    check_inputs(BASE)
    assert config_warnings(BASE) == []


@pytest.mark.parametrize("where, key", [
    (lambda c: c["world"]["problems"]["families"].__setitem__("train", ["add", "div"]),
     r"world\.problems\.families\.train: unknown problem family 'div'; known: add, mul, mod"),
    (lambda c: c["models"]["student"]["world"].__setitem__("families", ["pow"]),
     r"models\.student\.world\.families: unknown problem family 'pow'"),
    (lambda c: c["models"]["teacher"]["world"].__setitem__("style", "verbose"),
     r"models\.teacher\.world\.style: unknown solution style 'verbose'; known: terse, think"),
])
def test_world_names_are_checked_against_the_generator(where, key):
    """Family and style names have one home (opd/world); the config check reads it."""
    cfg = copy.deepcopy(BASE)
    where(cfg)
    with pytest.raises(ConfigError, match=key):
        check_config(cfg)
