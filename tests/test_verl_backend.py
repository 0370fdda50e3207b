"""The verl backend: command generation, support table, and checks against an installed verl 0.9.1.

Pure-Python tests run in the main venv.  Tests that need verl shell out to ``.venv-verl/bin/python``
(built by ``make env-verl``) and are skipped when it is missing.  verl's trainer itself is not run
(it needs GPUs); what is checked: the generated overrides compose (and convert to verl's config
dataclasses) against verl's packaged ``ppo_trainer`` config, the registered functions run through
verl's registries on synthetic tensors and match ``opd.objectives``, and the reward file grades.
"""
from __future__ import annotations

import copy
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from opd.backends.verl import (ALTERNATIVE, TOPK_LOSSES, UnsupportedCombination, check_supported,
                               support_table, verl_command)
from opd.config import experiment_config
from opd.objectives import STRATEGIES, WEIGHT_MODES

ROOT = Path(__file__).resolve().parents[1]
VERL_PY = ROOT / ".venv-verl" / "bin" / "python"
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
PATHS = {"student": "/models/student", "teacher": "/models/teacher", "train_parquet": "/data/train.parquet",
         "val_parquet": "/data/val.parquet", "output_dir": "/out/opd",
         "reward_fn_file": str(ROOT / "opd" / "backends" / "verl_reward.py")}

needs_verl = pytest.mark.skipif(not VERL_PY.exists(),
                                reason="verl env missing: run `make env-verl` to build .venv-verl")


def opd_cfg(**objective) -> dict:
    cfg = copy.deepcopy(experiment_config(CONFIG, "opd"))
    cfg["objective"].update(objective)
    return cfg


def grpo_cfg() -> dict:
    return experiment_config(CONFIG, "grpo")


def overrides(argv: list[str]) -> dict[str, str]:
    assert argv[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    return dict(a.split("=", 1) for a in argv[3:])


def supported_cases() -> dict[str, dict]:
    """Every command the backend can generate: GRPO, sampled-token OPD, every exact top-k combo."""
    cases = {"grpo": grpo_cfg(), "opd_k0": opd_cfg(top_k=0),
             "opd_k0_plus_grpo": opd_cfg(top_k=0, adv_estimator="token_reward_direct_plus_grpo")}
    for (s, w), verdict in support_table().items():
        if verdict == "exact" and s != 0:
            cases[f"opd_{s}_{w}"] = opd_cfg(strategy=s, weight_mode=w)
    cases["opd_only_tch_plus_grpo"] = opd_cfg(strategy="only_tch", adv_estimator="token_reward_direct_plus_grpo")
    return cases


def run_verl(code: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VERL_PY), "-c", textwrap.dedent(code)], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def compose(ovs: list[str], select: list[str]) -> tuple[int, dict]:
    p = subprocess.run([str(VERL_PY), "-m", "opd.backends.verl_compose_check"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300, input=json.dumps({"overrides": ovs, "select": select}))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON from compose check: rc={p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
    return p.returncode, json.loads(lines[-1])


# ----------------------------------------------------------------------------- pure Python
def test_support_table_covers_everything():
    t = support_table()
    assert set(t) == {(s, w) for s in STRATEGIES for w in WEIGHT_MODES} | {(0, None)}
    assert len(t) == 16 and set(t.values()) <= {"exact", "refused"}
    assert t[(0, None)] == "exact"
    for w in WEIGHT_MODES:
        assert t[("only_tch", w)] == "exact" and t[("intersection", w)] == "exact"
        for s in ("only_stu", "union", "union-intersection"):
            assert t[(s, w)] == "refused"
    assert set(TOPK_LOSSES) == {f"opd_{s}_{w}" for (s, w), v in t.items() if v == "exact" and s != 0}


@pytest.mark.parametrize("strategy,weight", [(s, w) for s in STRATEGIES for w in WEIGHT_MODES])
def test_table_matches_behaviour(strategy, weight):
    cfg = opd_cfg(strategy=strategy, weight_mode=weight)
    if support_table()[(strategy, weight)] == "exact":
        ov = overrides(verl_command("opd", cfg, PATHS))
        assert ov["distillation.distillation_loss.loss_mode"] == f"opd_{strategy}_{weight}"
        assert ov["distillation.distillation_loss.topk"] == "16"
    else:
        with pytest.raises(UnsupportedCombination) as err:
            verl_command("opd", cfg, PATHS)
        assert ALTERNATIVE in str(err.value) and "use backends.train: native, or strategy only_tch" in str(err.value)
        assert strategy in str(err.value)


@pytest.mark.parametrize("objective,train", [
    ({"teacher_temperature": 2.0}, {}),
    ({}, {"ppo_epochs": 2}),
    ({}, {"mini_batch_size": 8}),
    ({"top_k": 0, "use_kl_loss": True, "kl_loss_coef": 0.1}, {}),
    ({"top_k": 0, "adv_estimator": "token_reward_direct_plus_grpo", "grpo_outcome_weight": 0.5}, {}),
])
def test_global_refusals(objective, train):
    cfg = opd_cfg(strategy="only_tch", **objective)
    cfg.update(train)
    with pytest.raises(UnsupportedCombination, match="use backends.train: native"):
        check_supported(cfg)


def test_unsupported_is_value_error_and_top_k0_ignores_strategy():
    assert issubclass(UnsupportedCombination, ValueError)
    ov = overrides(verl_command("opd", opd_cfg(top_k=0, strategy="union", weight_mode="teacher_p"), PATHS))
    assert ov["distillation.distillation_loss.loss_mode"] == "k1"


def test_grpo_command():
    ov = overrides(verl_command("grpo", grpo_cfg(), PATHS))
    assert ov["algorithm.adv_estimator"] == "grpo"
    assert ov["actor_rollout_ref.rollout.n"] == "8"
    assert ov["actor_rollout_ref.actor.optim.lr"] == "2e-05"
    assert ov["data.train_batch_size"] == "16" and ov["actor_rollout_ref.actor.ppo_mini_batch_size"] == "16"
    assert ov["reward.custom_reward_function.path"] == PATHS["reward_fn_file"]
    assert ov["reward.custom_reward_function.name"] == "compute_score"
    assert ov["actor_rollout_ref.model.external_lib"] == "opd.backends.verl_ext"
    assert not any(k.startswith("distillation.") for k in ov)
    # mini_batch_size is counted in sequences natively, in prompts by verl
    cfg = grpo_cfg()
    cfg["mini_batch_size"] = 64
    assert overrides(verl_command("grpo", cfg, PATHS))["actor_rollout_ref.actor.ppo_mini_batch_size"] == "8"
    cfg["mini_batch_size"] = 60
    with pytest.raises(ValueError, match="multiple of n_samples"):
        verl_command("grpo", cfg, PATHS)


def test_sampled_token_opd_command():
    ov = overrides(verl_command("opd", opd_cfg(top_k=0), PATHS))
    assert ov["distillation.enabled"] == "true"
    assert ov["distillation.distillation_loss.loss_mode"] == "k1"
    assert ov["distillation.distillation_loss.use_policy_gradient"] == "true"
    assert ov["distillation.distillation_loss.use_task_rewards"] == "false"
    assert ov["distillation.teacher_models.teacher_model.model_path"] == "/models/teacher"
    ov = overrides(verl_command("opd", opd_cfg(top_k=0, adv_estimator="token_reward_direct_plus_grpo"), PATHS))
    assert ov["distillation.distillation_loss.use_task_rewards"] == "true"
    assert ov["algorithm.adv_estimator"] == "grpo"


def test_missing_paths():
    with pytest.raises(ValueError, match="teacher"):
        verl_command("opd", opd_cfg(top_k=0), {k: v for k, v in PATHS.items() if k != "teacher"})


# ----------------------------------------------------------------------------- against verl 0.9.1
SELECT = ["algorithm.adv_estimator", "actor_rollout_ref.actor.optim.lr", "actor_rollout_ref.rollout.n",
          "data.train_batch_size", "distillation.enabled", "distillation.distillation_loss.loss_mode",
          "distillation.distillation_loss.topk", "actor_rollout_ref.actor.optim.override_optimizer_config",
          "reward.custom_reward_function.path"]


@needs_verl
@pytest.mark.parametrize("case", sorted(supported_cases()))
def test_commands_compose_with_verl(case):
    cfg = supported_cases()[case]
    name = "grpo" if case == "grpo" else "opd"
    argv = verl_command(name, cfg, PATHS)
    rc, out = compose(argv[3:], SELECT)
    assert rc == 0 and out["ok"], out
    v = out["values"]
    assert v["actor_rollout_ref.actor.optim.lr"] == pytest.approx(cfg["lr"])
    assert v["actor_rollout_ref.rollout.n"] == cfg["n_samples"]
    assert v["data.train_batch_size"] == cfg["prompts_per_step"]
    assert v["actor_rollout_ref.actor.optim.override_optimizer_config"] == {"eps": 1e-8}
    assert v["reward.custom_reward_function.path"] == PATHS["reward_fn_file"]
    assert v["algorithm.adv_estimator"] == "grpo"
    if case == "grpo":
        assert v["distillation.enabled"] is False
    else:
        assert v["distillation.enabled"] is True
        k = cfg["objective"]["top_k"]
        assert v["distillation.distillation_loss.loss_mode"] == (
            "k1" if k == 0 else f"opd_{cfg['objective']['strategy']}_{cfg['objective']['weight_mode']}")
        if k:
            assert v["distillation.distillation_loss.topk"] == k
    assert "distillation:DistillationConfig" in out["dataclasses"]


@needs_verl
def test_invalid_key_fails_composition():
    argv = verl_command("grpo", grpo_cfg(), PATHS)
    rc, out = compose(argv[3:] + ["actor_rollout_ref.actor.optim.learning_rate=0.1"], [])
    assert rc == 1 and not out["ok"] and "learning_rate" in out["error"]
    # a distillation loss verl does not know fails the dataclass conversion
    argv = verl_command("opd", opd_cfg(strategy="only_tch"), PATHS)
    rc, out = compose(argv[3:] + ["distillation.distillation_loss.loss_mode=opd_union_none"], [])
    assert rc == 1 and "opd_union_none" in out["error"]


@needs_verl
def test_registered_functions_through_verl_registries():
    p = run_verl("""
        import importlib, json, numpy as np, torch
        import opd.backends.verl_ext as ext
        importlib.reload(ext); ext.register()            # importing / registering twice is fine
        from verl.trainer.ppo import core_algos
        from verl.trainer.config import AlgoConfig
        from verl.trainer.distillation import losses as L
        out = {}
        torch.manual_seed(0)
        B, R = 6, 5
        r = torch.randn(B, R)
        mask = torch.ones(B, R); mask[0, 3:] = 0; mask[4, 1:] = 0
        uid = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
        fn = core_algos.get_adv_estimator_fn("token_reward_direct")
        a, ret = fn(token_level_rewards=r, response_mask=mask, config=AlgoConfig(), index=uid)
        out["direct"] = torch.allclose(a, r * mask) and a.shape == (B, R)
        # plus_grpo == r*mask + verl's own GRPO on the same outcome (sum of token rewards)
        fn = core_algos.get_adv_estimator_fn("token_reward_direct_plus_grpo")
        a, _ = fn(token_level_rewards=r, response_mask=mask, config=AlgoConfig(), index=uid)
        last = torch.zeros(B, R); last[torch.arange(B), mask.sum(-1).long() - 1] = (r * mask).sum(-1)
        g, _ = core_algos.compute_grpo_outcome_advantage(last, mask, uid, norm_adv_by_std_in_grpo=True)
        out["plus_grpo"] = torch.allclose(a, r * mask + g, atol=1e-5)
        out["plus_grpo_raw_match_check"] = float((a - r * mask - g).abs().max())
        out["settings"] = {n: L.get_distillation_loss_settings(n).use_topk for n in ext.TOPK_LOSSES}
        out["processor_wrapped"] = bool(getattr(L.compute_topk_loss, "_opd_verl_ext", False))
        print("RESULT" + json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.split("RESULT", 1)[1])
    assert out["direct"] and out["plus_grpo"], out
    assert out["processor_wrapped"] and out["settings"] and all(out["settings"].values())


@needs_verl
@pytest.mark.parametrize("strategy", ["only_tch", "intersection"])
def test_topk_distillation_loss_matches_native(strategy):
    """verl's full distillation path (wrapped logits processor -> registered loss -> verl's aggregation)
    on a synthetic packed micro-batch equals opd.objectives on the full teacher distribution."""
    p = run_verl(f"""
        import json, types, torch, torch.nn.functional as F
        from tensordict import TensorDict
        import opd.backends.verl_ext  # noqa: F401
        from verl.trainer.distillation import losses as L
        from verl.workers.config import DistillationConfig, DistillationLossConfig
        from opd import objectives as obj
        torch.manual_seed(0)
        V, K = 40, 6
        P, Rl = [3, 2], [4, 5]                                  # prompt / response lengths per sequence
        seq = [p + r for p, r in zip(P, Rl)]; N = sum(seq)
        s_logits = (torch.randn(1, N, V) * 2).requires_grad_(True)
        t_logits = torch.randn(N, V) * 2
        T = F.log_softmax(t_logits, -1)
        t_val, t_ids = T.topk(K, -1)                             # what vLLM's teacher returns
        off = torch.tensor([0] + seq).cumsum(0)
        nest = lambda x: torch.nested.nested_tensor_from_jagged(x, off)
        Rmax = max(Rl)
        prompts = torch.zeros(2, max(P), dtype=torch.long); responses = torch.zeros(2, Rmax, dtype=torch.long)
        attn = torch.zeros(2, max(P) + Rmax, dtype=torch.long); rmask = torch.zeros(2, Rmax)
        for b in range(2):
            attn[b, max(P) - P[b]:max(P)] = 1; attn[b, max(P):max(P) + Rl[b]] = 1; rmask[b, :Rl[b]] = 1
        data = TensorDict({{"teacher_logprobs": nest(t_val), "teacher_ids": nest(t_ids), "prompts": prompts,
                           "responses": responses, "attention_mask": attn, "response_mask": rmask,
                           "dp_size": 1, "batch_num_tokens": int(rmask.sum()), "global_batch_size": 2}}, batch_size=[])
        res = {{}}
        for wm in ("student_p", "teacher_p", "none"):
            lc = DistillationLossConfig(loss_mode=f"opd_{strategy}_{{wm}}", topk=K, use_task_rewards=False,
                                        use_policy_gradient=False, loss_max_clamp=None, log_prob_min_clamp=None)
            dc = DistillationConfig(enabled=False, distillation_loss=lc)
            actor = types.SimpleNamespace(strategy="fsdp", loss_agg_mode="token-mean", global_batch_info={{}},
                                          loss_scale_factor=None)
            outs = L.distillation_ppo_loss(actor, dc, data=data, student_logits=s_logits)   # logits processor
            model_output = {{k: v.squeeze(0) for k, v in outs.items()}}
            loss, metrics = L.distillation_ppo_loss(actor, dc, model_output=model_output, data=data)
            g_verl, = torch.autograd.grad(loss, s_logits)
            # native: positions predicting response tokens, full teacher distribution
            pos = torch.cat([torch.arange(off[b] + P[b] - 1, off[b] + seq[b] - 1) for b in range(2)])
            S = F.log_softmax(s_logits[0, pos], -1)
            d = obj.topk_details(S, T[pos], K, "{strategy}", wm)
            cfg = obj.OPDConfig(top_k=K, strategy="{strategy}", weight_mode=wm)
            tok, _ = obj.TOKEN_LOSSES.get("vanilla")(d.student_logp, d.student_logp.detach(), d.rewards.detach(), d.valid, cfg)
            native = tok.sum() / len(pos)                            # token-mean over response tokens
            g_nat, = torch.autograd.grad(native, s_logits)
            res[wm] = dict(loss=float(loss), native=float(native), grad=float((g_verl - g_nat).abs().max()),
                           gnorm=float(g_nat.abs().max()), valid=float(d.valid.float().mean()),
                           reward=metrics["distillation/opd_reward"],
                           reward_native=float(d.rewards.sum(-1).mean()))
        print("RESULT" + json.dumps(res))
    """)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads(p.stdout.split("RESULT", 1)[1])
    for wm, r in res.items():
        assert r["loss"] == pytest.approx(r["native"], abs=1e-5), (wm, r)
        assert r["reward"] == pytest.approx(r["reward_native"], abs=1e-5), (wm, r)
        assert r["gnorm"] > 1e-4 and r["grad"] < 1e-5, (wm, r)
        assert 0 < r["valid"] <= 1


@needs_verl
def test_reward_function_grades_real_responses():
    p = run_verl("""
        import json, inspect
        from verl.trainer.ppo.reward import get_custom_reward_fn
        from omegaconf import OmegaConf
        cfg = OmegaConf.create({"reward": {"custom_reward_function": {
            "path": "opd/backends/verl_reward.py", "name": "compute_score"}}})
        fn = get_custom_reward_fn(cfg)                       # verl's own loader
        kw = dict(data_source="world", extra_info={"index": 0})
        out = [fn(solution_str="3 + 4 = 7, so the answer is \\\\boxed{7}.", ground_truth="7", **kw),
               fn(solution_str="The answer is \\\\boxed{8}.", ground_truth="7", **kw),
               fn(solution_str="The answer is 7.", ground_truth="7", **kw),
               fn(solution_str="We get \\\\boxed{\\\\frac{1}{2}}", ground_truth="0.5", **kw)]
        print("RESULT" + json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr[-4000:]
    assert json.loads(p.stdout.split("RESULT", 1)[1]) == [1.0, 0.0, 0.0, 1.0]


def test_reward_function_in_main_env():
    from opd.backends.verl_reward import compute_score
    assert compute_score("world", r"so \boxed{12}", "12") == 1.0
    assert compute_score("world", r"so \boxed{13}", "12", extra_info={}) == 0.0
    assert compute_score("world", "so 12", "12") == 0.0
