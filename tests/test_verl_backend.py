"""The verl backend: command generation, support table, and checks against an installed verl 0.9.1.

Pure-Python tests run in the main venv.  Tests that need verl shell out to ``.venv-verl/bin/python``
(built by ``make env-verl``) and are skipped when it is missing.  verl's trainer itself is not run
(it needs GPUs); what is checked: the generated overrides compose (and convert to verl's config
dataclasses) against verl's packaged ``ppo_trainer`` config, the registered functions run through
verl's registries on synthetic tensors and match ``opd.objectives``, and the reward file grades.
The approximate top-k losses (``backends.verl.teacher_topk`` > ``top_k``): ``approx_topk_details`` is
checked against the exact ``topk_details`` in the main venv (``opd.train.verl.ext`` imports without
verl and then registers nothing), their commands compose and their names run through verl's registries.
"""
from __future__ import annotations

import copy
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from opd.train.config import TrainConfig
from opd.train.verl import command
from opd.train.verl.command import (ALTERNATIVE, APPROX_TOPK_LOSSES, APPROX_TOPK_SIZES, TOPK_LOSSES,
                                    UnsupportedCombination, support_table)
from opd.train.verl.ext import approx_topk_details, teacher_tail_bound, topk_token_outputs
from opd.experiments import experiment_config
from opd.objectives import STRATEGIES, WEIGHT_MODES, topk_details

ROOT = Path(__file__).resolve().parents[1]
VERL_PY = ROOT / ".venv-verl" / "bin" / "python"
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
# these tests map the paper's objectives; the default world adds the tail bucket (beyond the
# paper), which this backend refuses (a test below says so)
CONFIG["train_defaults"]["objective"]["tail_bucket"] = False
# and one update a step, as the authors' scripts (config/paper.yaml): the world's four mini-batches
# a step are refused on verl's OPD (a test below says so)
CONFIG["train_defaults"]["mini_batch_size"] = None
PATHS = {"student": "/models/student", "teacher": "/models/teacher", "train_parquet": "/data/train.parquet",
         "val_parquet": "/data/val.parquet", "output_dir": "/out/opd",
         "reward_fn_file": str(ROOT / "opd" / "train" / "verl" / "reward.py")}

needs_verl = pytest.mark.skipif(not VERL_PY.exists(),
                                reason="verl env missing: run `make env-verl` to build .venv-verl")


# The command builder takes the parsed TrainConfig; these tests write experiment configs as dicts.
def verl_command(exp, cfg, *args):
    return command.verl_command(exp, TrainConfig.from_dict(cfg), *args)


def check_supported(cfg, *args):
    return command.check_supported(TrainConfig.from_dict(cfg), *args)


def is_approximate(cfg, *args):
    return command.is_approximate(TrainConfig.from_dict(cfg), *args)


def opd_cfg(**objective) -> dict:
    cfg = copy.deepcopy(experiment_config(CONFIG, "opd"))
    cfg["objective"].update(objective)
    return cfg


def grpo_cfg() -> dict:
    return experiment_config(CONFIG, "grpo")


def overrides(argv: list[str]) -> dict[str, str]:
    assert argv[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    return dict(a.split("=", 1) for a in argv[3:])


APPROX = {"teacher_topk": 64}          # the cluster option that enables the approximate strategies


def supported_cases() -> dict[str, tuple[dict, dict | None]]:
    """Every command the backend can generate, as (train config, cluster): GRPO, sampled-token OPD,
    every exact top-k combo, and the approximate strategies with teacher_topk 64 > top_k 16."""
    cases = {"grpo": (grpo_cfg(), None), "opd_k0": (opd_cfg(top_k=0), None),
             "opd_k0_plus_grpo": (opd_cfg(top_k=0, adv_estimator="token_reward_direct_plus_grpo"), None)}
    for (s, w), verdict in support_table().items():
        if verdict == "exact" and s != 0:
            cases[f"opd_{s}_{w}"] = (opd_cfg(strategy=s, weight_mode=w), None)
    cases["opd_only_tch_plus_grpo"] = (opd_cfg(strategy="only_tch", adv_estimator="token_reward_direct_plus_grpo"),
                                       None)
    for s in ("only_stu", "union", "union-intersection"):
        cases[f"approx_{s}_student_p"] = (opd_cfg(strategy=s, weight_mode="student_p", top_k=16), APPROX)
    cases["approx_union-intersection_teacher_p_plus_grpo"] = (
        opd_cfg(strategy="union-intersection", weight_mode="teacher_p", top_k=16,
                adv_estimator="token_reward_direct_plus_grpo"), APPROX)
    cases["approx_cluster_only_tch"] = (opd_cfg(strategy="only_tch", top_k=16), APPROX)  # exact, topk 16
    return cases


def run_verl(code: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VERL_PY), "-c", textwrap.dedent(code)], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


# A synthetic packed micro-batch as verl's actor hands it to the distillation loss: two sequences
# (prompt lengths P, response lengths Rl) of V-way student logits, packed ([1, N, V]); ``T`` is the
# teacher's full log-distribution; ``batch(t_val, t_ids)`` wraps teacher top-k columns as verl's
# nested tensors; ``pos`` are the packed positions that predict response tokens. Needs ``V``.
PACKED_BATCH = """
import json, types, torch, torch.nn.functional as F
from tensordict import TensorDict
from verl.trainer.distillation import losses as L
from verl.workers.config import DistillationConfig, DistillationLossConfig
from opd import objectives as obj
torch.manual_seed(0)
P, Rl = [3, 2], [4, 5]
seq = [p + r for p, r in zip(P, Rl)]; N = sum(seq)
s_logits = (torch.randn(1, N, V) * 2).requires_grad_(True)
T = F.log_softmax(torch.randn(N, V) * 2, -1)
off = torch.tensor([0] + seq).cumsum(0)
nest = lambda x: torch.nested.nested_tensor_from_jagged(x, off)
Rmax = max(Rl)
prompts = torch.zeros(2, max(P), dtype=torch.long); responses = torch.zeros(2, Rmax, dtype=torch.long)
attn = torch.zeros(2, max(P) + Rmax, dtype=torch.long); rmask = torch.zeros(2, Rmax)
for b in range(2):
    attn[b, max(P) - P[b]:max(P)] = 1; attn[b, max(P):max(P) + Rl[b]] = 1; rmask[b, :Rl[b]] = 1
pos = torch.cat([torch.arange(off[b] + P[b] - 1, off[b] + seq[b] - 1) for b in range(2)])
actor = types.SimpleNamespace(strategy="fsdp", loss_agg_mode="token-mean", global_batch_info={},
                              loss_scale_factor=None)


def batch(t_val, t_ids):
    return TensorDict({"teacher_logprobs": nest(t_val), "teacher_ids": nest(t_ids), "prompts": prompts,
                       "responses": responses, "attention_mask": attn, "response_mask": rmask,
                       "dp_size": 1, "batch_num_tokens": int(rmask.sum()), "global_batch_size": 2},
                      batch_size=[])


def verl_loss(loss_mode, topk, data):
    \"\"\"verl's two-pass distillation loss: the logits processor, then the registered loss.\"\"\"
    lc = DistillationLossConfig(loss_mode=loss_mode, topk=topk, use_task_rewards=False,
                                use_policy_gradient=False, loss_max_clamp=None, log_prob_min_clamp=None)
    dc = DistillationConfig(enabled=False, distillation_loss=lc)
    outs = L.distillation_ppo_loss(actor, dc, data=data, student_logits=s_logits)
    model_output = {n: v.squeeze(0) for n, v in outs.items()}
    return L.distillation_ppo_loss(actor, dc, model_output=model_output, data=data)
"""


def run_packed(v: int, body: str) -> subprocess.CompletedProcess:
    """``body`` (dedented) after ``PACKED_BATCH`` with vocabulary ``v``, in the verl env."""
    return run_verl(f"V = {v}\n" + PACKED_BATCH + textwrap.dedent(body))


def compose(ovs: list[str], select: list[str]) -> tuple[int, dict]:
    p = subprocess.run([str(VERL_PY), str(ROOT / "tests" / "verl_compose_check.py")], capture_output=True, text=True,
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


def test_support_table_with_teacher_topk():
    assert support_table(None) == support_table()
    for args, approx in [((64,), True), ((64, 16), True), ((17, 16), True), ((16, 16), False),
                         ((80, 20), False), ((8, 16), False)]:
        t = support_table(*args)
        assert set(t) == set(support_table()) and t[(0, None)] == "exact"
        for w in WEIGHT_MODES:
            assert t[("only_tch", w)] == "exact" and t[("intersection", w)] == "exact"
            for s in ("only_stu", "union", "union-intersection"):
                assert t[(s, w)] == ("approximate" if approx else "refused"), (args, s, w)
    assert len(APPROX_TOPK_LOSSES) == 3 * 3 * len(APPROX_TOPK_SIZES) == 72
    assert APPROX_TOPK_LOSSES["opd_union-intersection_teacher_p_approx_k16"] == ("union-intersection", "teacher_p", 16)
    assert not set(APPROX_TOPK_LOSSES) & set(TOPK_LOSSES)


@pytest.mark.parametrize("strategy,weight", [(s, w) for s in STRATEGIES for w in WEIGHT_MODES])
def test_table_matches_behaviour_with_teacher_topk(strategy, weight):
    cfg = opd_cfg(strategy=strategy, weight_mode=weight, top_k=16)
    verdict = support_table(64, 16)[(strategy, weight)]
    check_supported(cfg, APPROX)
    ov = overrides(verl_command("opd", cfg, PATHS, APPROX))
    assert is_approximate(cfg, APPROX) == (verdict == "approximate")
    if verdict == "approximate":
        assert ov["distillation.distillation_loss.loss_mode"] == f"opd_{strategy}_{weight}_approx_k16"
        assert ov["distillation.distillation_loss.topk"] == "64"
    else:   # the exact strategies ask for top_k teacher log-probs whatever teacher_topk says
        assert ov["distillation.distillation_loss.loss_mode"] == f"opd_{strategy}_{weight}"
        assert ov["distillation.distillation_loss.topk"] == "16"
    assert ov["distillation.distillation_loss.use_policy_gradient"] == "false"


@pytest.mark.parametrize("cluster,top_k,why", [
    (None, 16, "it is not set"),
    ({}, 16, "it is not set"),
    ({"teacher_topk": None}, 16, "it is not set"),
    ({"teacher_topk": 16}, 16, "it is 16"),
    ({"teacher_topk": 80}, 20, "top_k=20 is not one of"),
])
def test_refusal_says_how_to_get_the_approximation(cluster, top_k, why):
    cfg = opd_cfg(strategy="only_stu", weight_mode="student_p", top_k=top_k)
    with pytest.raises(UnsupportedCombination) as err:
        check_supported(cfg, cluster)
    msg = str(err.value)
    assert ALTERNATIVE in msg and "only_stu" in msg and why in msg, msg
    assert "backends.verl.teacher_topk" in msg and f"4*top_k = {4 * top_k}" in msg, msg
    with pytest.raises(UnsupportedCombination):
        verl_command("opd", cfg, PATHS, cluster)


def test_teacher_topk_checks():
    with pytest.raises(UnsupportedCombination, match="teacher_topk=8 is below top_k=16"):
        check_supported(opd_cfg(strategy="only_tch", top_k=16), {"teacher_topk": 8})
    for bad in (0, -1, 2.5, True, "64"):
        with pytest.raises(ValueError, match="teacher_topk must be null or an int"):
            check_supported(opd_cfg(strategy="only_tch"), {"teacher_topk": bad})
    # the old one-argument form, top_k 0 and GRPO ignore the option
    check_supported(opd_cfg(strategy="only_tch"))
    check_supported(opd_cfg(top_k=0, strategy="only_stu"), {"teacher_topk": 4})
    check_supported(grpo_cfg(), {"teacher_topk": 4})
    assert not is_approximate(opd_cfg(top_k=0, strategy="only_stu"), APPROX)
    # the global refusals still apply to the approximate strategies
    with pytest.raises(UnsupportedCombination, match="teacher_temperature"):
        check_supported(opd_cfg(strategy="union", top_k=16, teacher_temperature=2.0), APPROX)


def test_unsupported_is_value_error_and_top_k0_ignores_strategy():
    assert issubclass(UnsupportedCombination, ValueError)
    ov = overrides(verl_command("opd", opd_cfg(top_k=0, strategy="union", weight_mode="teacher_p"), PATHS))
    assert ov["distillation.distillation_loss.loss_mode"] == "k1"


def test_tail_bucket_is_refused_with_the_fix():
    """The default world's objective has the tail bucket; verl's teacher cannot give it."""
    with pytest.raises(UnsupportedCombination, match="tail_bucket.*backends.train: native"):
        verl_command("opd", opd_cfg(tail_bucket=True), PATHS)


def test_grpo_command():
    ov = overrides(verl_command("grpo", grpo_cfg(), PATHS))
    assert ov["algorithm.adv_estimator"] == "grpo"
    assert ov["actor_rollout_ref.rollout.n"] == "8"
    assert ov["actor_rollout_ref.actor.optim.lr"] == "2e-05"
    assert ov["data.train_batch_size"] == "16" and ov["actor_rollout_ref.actor.ppo_mini_batch_size"] == "16"
    assert ov["reward.custom_reward_function.path"] == PATHS["reward_fn_file"]
    assert ov["reward.custom_reward_function.name"] == "compute_score"
    assert ov["actor_rollout_ref.model.external_lib"] == "opd.train.verl.ext"
    assert not any(k.startswith("distillation.") for k in ov)
    # mini_batch_size is counted in sequences natively, in prompts by verl
    cfg = grpo_cfg()
    cfg["mini_batch_size"] = 64
    assert overrides(verl_command("grpo", cfg, PATHS))["actor_rollout_ref.actor.ppo_mini_batch_size"] == "8"
    cfg["mini_batch_size"] = 60
    with pytest.raises(ValueError, match="multiple of n_samples"):
        verl_command("grpo", cfg, PATHS)


def test_grpo_truncated_importance_sampling_is_verls_rollout_correction():
    """The authors' GRPO script caps token-level rollout/trainer importance weights at 2.0."""
    tis = {"grpo_rollout_is": "token", "grpo_rollout_is_threshold": 2.0}
    ov = overrides(verl_command("grpo", grpo_cfg(), PATHS, tis))
    assert ov["algorithm.rollout_correction.rollout_is"] == "token"
    assert ov["algorithm.rollout_correction.rollout_is_threshold"] == "2.0"
    assert "algorithm.rollout_correction.rollout_is" not in overrides(verl_command("grpo", grpo_cfg(), PATHS))
    # OPD runs are left alone: the option is for GRPO only
    assert "algorithm.rollout_correction.rollout_is" not in overrides(
        verl_command("opd", opd_cfg(top_k=0), PATHS, tis))


@needs_verl
def test_grpo_truncated_importance_sampling_composes():
    argv = verl_command("grpo", grpo_cfg(), PATHS, {"grpo_rollout_is": "token", "grpo_rollout_is_threshold": 2.0})
    rc, out = compose(argv[3:], ["algorithm.rollout_correction.rollout_is",
                                 "algorithm.rollout_correction.rollout_is_threshold"])
    assert rc == 0 and out["ok"], out
    assert out["values"]["algorithm.rollout_correction.rollout_is"] == "token"
    assert out["values"]["algorithm.rollout_correction.rollout_is_threshold"] == 2.0


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


# ----------------------------------------------------------------------------- approximate top-k math
FIELDS = ("rewards", "valid", "weights", "student_logp", "teacher_logp")


def _logps(B: int, V: int, seed: int, dtype=torch.float32, masked: bool = True):
    """Random student / teacher log-probs [B, V]; with ``masked``, some -inf (masked vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    zs, zt = torch.randn(B, V, generator=g, dtype=dtype) * 3, torch.randn(B, V, generator=g, dtype=dtype) * 3
    if masked:
        zs[0, :V - 3] = float("-inf")                     # fewer than k finite student tokens
        zt[1, :V - 2] = float("-inf")                     # fewer than k finite teacher tokens
        zs[2, 5:9] = float("-inf"); zt[2, 0:12] = float("-inf")
        zs[3] = float("-inf")                             # masked row: no valid candidate
    S, T = torch.log_softmax(zs, -1), torch.log_softmax(zt, -1)
    if masked:
        S[3] = float("-inf")
    return S, T


def _teacher_topk(T: torch.Tensor, kp: int, seed: int):
    """What verl's teacher returns: the top-K' ids and log-probs, shuffled (vLLM's order is not used)."""
    val, ids = T.topk(kp, -1)
    g = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(kp, generator=g) for _ in range(T.shape[0])])
    return ids.gather(-1, perm), val.gather(-1, perm)


def _assert_same(a, e):
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(e, f)), f
    assert torch.equal(torch.where(a.valid, a.ids, 0), torch.where(e.valid, e.ids, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("strategy,weight", [(s, w) for s in STRATEGIES for w in WEIGHT_MODES])
def test_approx_equals_native_when_the_teacher_returns_everything(strategy, weight, dtype):
    S, T = _logps(24, 40, 0, dtype)
    for k in (1, 5, 16):
        t_ids, t_logp = _teacher_topk(T, 40, k)                # K' = V: every log-prob is known
        _assert_same(approx_topk_details(S, t_ids, t_logp, k, strategy, weight),
                     topk_details(S, T, k, strategy, weight))


@pytest.mark.parametrize("strategy", ["only_tch", "intersection"])
@pytest.mark.parametrize("weight", WEIGHT_MODES)
def test_approx_is_exact_for_teacher_side_strategies(strategy, weight):
    S, T = _logps(24, 40, 1)
    for k in (1, 4, 8):
        for kp in (k, k + 1, 2 * k, 40):
            t_ids, t_logp = _teacher_topk(T, kp, kp)
            _assert_same(approx_topk_details(S, t_ids, t_logp, k, strategy, weight),
                         topk_details(S, T, k, strategy, weight))


def test_tail_bound_is_an_upper_bound():
    V = 64
    for seed, scale in [(0, 1.0), (1, 3.0), (2, 8.0), (3, 30.0)]:          # up to very peaked teachers
        _, T = _logps(32, V, seed, masked=False)
        T = torch.log_softmax(T * scale, -1)
        for kp in (1, 4, 16, 48, 63):
            val, ids = T.topk(kp, -1)
            b = teacher_tail_bound(val)
            outside = T.scatter(-1, ids, float("-inf")).amax(-1)        # largest true log-prob outside
            assert (b >= outside).all(), (seed, kp, (outside - b).max())
            assert (b <= val.amin(-1)).all()
    # fewer than K' finite: nothing else has probability; NaN counts as -inf
    assert teacher_tail_bound(torch.tensor([[0.0, float("-inf")]])).item() == float("-inf")
    assert teacher_tail_bound(torch.tensor([[0.0, float("nan")]])).item() == float("-inf")


@pytest.mark.parametrize("strategy", ["only_stu", "union", "union-intersection"])
@pytest.mark.parametrize("weight", WEIGHT_MODES)
def test_approx_over_estimates_only_outside_the_teacher_topk(strategy, weight):
    S, T = _logps(48, 60, 2)
    k = 8
    e = topk_details(S, T, k, strategy, weight)
    for kp in (k, 2 * k, 4 * k):
        t_ids, t_logp = _teacher_topk(T, kp, kp)
        a = approx_topk_details(S, t_ids, t_logp, k, strategy, weight)
        assert torch.equal(a.valid, e.valid) and torch.equal(a.student_logp, e.student_logp)
        known = (a.ids.unsqueeze(-1) == t_ids.unsqueeze(-2)).any(-1)
        out = a.valid & ~known
        assert out.any() and (a.valid & known).any()
        assert (a.teacher_logp >= e.teacher_logp).all()                  # the bound is an upper bound
        assert torch.equal(a.teacher_logp[known], e.teacher_logp[known])
        if weight != "teacher_p":        # weights do not read T: the reward moves up exactly outside
            assert torch.equal(a.weights, e.weights)
            assert (a.rewards[out] >= e.rewards[out]).all()
            assert torch.equal(a.rewards[~out], e.rewards[~out])
        assert torch.isfinite(a.rewards).all() and torch.isfinite(a.weights).all()


def test_approx_topk_details_rejects_bad_input():
    S, T = _logps(4, 20, 3, masked=False)
    t_ids, t_logp = _teacher_topk(T, 6, 0)
    with pytest.raises(ValueError, match="k must be"):
        approx_topk_details(S, t_ids, t_logp, 7, "only_stu", "none")
    with pytest.raises(ValueError, match="K'"):
        approx_topk_details(S, t_ids[:, :5], t_logp, 4, "only_stu", "none")
    with pytest.raises(ValueError, match="unknown strategy"):
        approx_topk_details(S, t_ids, t_logp, 4, "both", "none")


@pytest.mark.parametrize("strategy", ["only_stu", "union", "union-intersection"])
def test_approx_token_outputs_have_finite_losses_and_gradients(strategy):
    S, T = _logps(12, 50, 4, masked=False)
    logits = (S * 1.3).requires_grad_(True)                  # verl-shaped: [1, nnz, V] / [1, nnz, K']
    t_ids, t_logp = _teacher_topk(T, 16, 0)
    out = topk_token_outputs(logits.unsqueeze(0), t_ids.unsqueeze(0), t_logp.unsqueeze(0), strategy,
                             "student_p", approx_k=4)
    assert set(out) >= {"distillation_losses", "opd_reward", "opd_valid", "opd_bounded"}
    assert all(v.shape == (1, 12) and torch.isfinite(v).all() for v in out.values())
    assert (out["opd_bounded"] > 0).any() and (out["opd_bounded"] <= out["opd_valid"]).all()
    g, = torch.autograd.grad(out["distillation_losses"].sum(), logits)
    assert torch.isfinite(g).all() and g.abs().max() > 1e-4


# ----------------------------------------------------------------------------- against verl 0.9.1
SELECT = ["algorithm.adv_estimator", "actor_rollout_ref.actor.optim.lr", "actor_rollout_ref.rollout.n",
          "data.train_batch_size", "distillation.enabled", "distillation.distillation_loss.loss_mode",
          "distillation.distillation_loss.topk", "actor_rollout_ref.actor.optim.override_optimizer_config",
          "reward.custom_reward_function.path"]


@needs_verl
@pytest.mark.parametrize("case", sorted(supported_cases()))
def test_commands_compose_with_verl(case):
    cfg, cluster = supported_cases()[case]
    name = "grpo" if case == "grpo" else "opd"
    argv = verl_command(name, cfg, PATHS, cluster)
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
        k, s = cfg["objective"]["top_k"], cfg["objective"]["strategy"]
        approx = k > 0 and s in ("only_stu", "union", "union-intersection")
        assert v["distillation.distillation_loss.loss_mode"] == (
            "k1" if k == 0 else f"opd_{s}_{cfg['objective']['weight_mode']}" + (f"_approx_k{k}" if approx else ""))
        if k:
            assert v["distillation.distillation_loss.topk"] == (cluster["teacher_topk"] if approx else k)
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
        import opd.train.verl.ext as ext
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
        names = list(ext.TOPK_LOSSES) + list(ext.APPROX_TOPK_LOSSES)
        out["settings"] = {n: L.get_distillation_loss_settings(n).use_topk for n in names}
        fns = [L.get_distillation_loss_fn(n) for n in names]       # (reloading made new function objects)
        out["same_fn"] = all((f.__module__, f.__name__) == (ext.__name__, "opd_topk_distillation_loss") for f in fns)
        out["processor_wrapped"] = bool(getattr(L.compute_topk_loss, "_opd_verl_ext", False))
        print("RESULT" + json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.split("RESULT", 1)[1])
    assert out["direct"] and out["plus_grpo"], out
    assert out["processor_wrapped"] and out["settings"] and all(out["settings"].values()) and out["same_fn"]
    assert len(out["settings"]) == len(TOPK_LOSSES) + len(APPROX_TOPK_LOSSES) == 78


@needs_verl
@pytest.mark.parametrize("strategy", ["only_tch", "intersection"])
def test_topk_distillation_loss_matches_native(strategy):
    """verl's full distillation path (wrapped logits processor -> registered loss -> verl's aggregation)
    on a synthetic packed micro-batch equals opd.objectives on the full teacher distribution."""
    p = run_packed(40, f"""
        import opd.train.verl.ext  # noqa: F401
        K = 6
        t_val, t_ids = T.topk(K, -1)                             # what vLLM's teacher returns
        data = batch(t_val, t_ids)
        res = {{}}
        for wm in ("student_p", "teacher_p", "none"):
            loss, metrics = verl_loss(f"opd_{strategy}_{{wm}}", K, data)
            g_verl, = torch.autograd.grad(loss, s_logits)
            # native: positions predicting response tokens, full teacher distribution
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
@pytest.mark.parametrize("strategy", ["only_stu", "union", "union-intersection"])
def test_approx_distillation_loss_through_verl(strategy):
    """The approximate losses through verl's distillation path on a synthetic packed micro-batch:
    with the teacher's full distribution (K' = V) they equal opd.objectives exactly; with K' = 12 of
    V = 40 they equal approx_topk_details + the vanilla surrogate, finite, with gradient."""
    p = run_packed(40, f"""
        import opd.train.verl.ext as ext
        k = 4
        res = {{}}
        for kp in (V, 12):
            t_val, t_ids = T.topk(kp, -1)
            perm = torch.stack([torch.randperm(kp) for _ in range(N)])     # vLLM's order is not relied on
            t_val, t_ids = t_val.gather(-1, perm), t_ids.gather(-1, perm)
            data = batch(t_val, t_ids)
            for wm in ("student_p", "teacher_p", "none"):
                loss, metrics = verl_loss(f"opd_{strategy}_{{wm}}_approx_k{{k}}", kp, data)
                g_verl, = torch.autograd.grad(loss, s_logits)
                S = F.log_softmax(s_logits[0, pos], -1)
                d = (obj.topk_details(S, T[pos], k, "{strategy}", wm) if kp == V else
                     ext.approx_topk_details(S, t_ids[pos], t_val[pos], k, "{strategy}", wm))
                cfg = obj.OPDConfig(top_k=k, strategy="{strategy}", weight_mode=wm)
                tok, _ = obj.TOKEN_LOSSES.get("vanilla")(d.student_logp, d.student_logp.detach(),
                                                         d.rewards.detach(), d.valid, cfg)
                ref = tok.sum() / len(pos)
                g_ref, = torch.autograd.grad(ref, s_logits)
                res[f"{{kp}}_{{wm}}"] = dict(
                    loss=float(loss), ref=float(ref), grad=float((g_verl - g_ref).abs().max()),
                    gnorm=float(g_verl.abs().max()), finite=bool(torch.isfinite(g_verl).all()),
                    reward=metrics["distillation/opd_reward"], reward_ref=float(d.rewards.sum(-1).mean()),
                    bounded=metrics.get("distillation/opd_bounded", -1.0))
        print("RESULT" + json.dumps(res))
    """)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads(p.stdout.split("RESULT", 1)[1])
    assert len(res) == 6
    for key, r in res.items():
        assert r["finite"] and r["gnorm"] > 1e-4 and r["grad"] < 1e-5, (key, r)
        assert r["loss"] == pytest.approx(r["ref"], abs=1e-5), (key, r)
        assert r["reward"] == pytest.approx(r["reward_ref"], abs=1e-5), (key, r)
        assert (r["bounded"] == 0.0) == key.startswith("40_"), (key, r)      # K' = V: nothing bounded


@needs_verl
def test_reward_function_grades_real_responses():
    p = run_verl("""
        import json, inspect
        from verl.trainer.ppo.reward import get_custom_reward_fn
        from omegaconf import OmegaConf
        cfg = OmegaConf.create({"reward": {"custom_reward_function": {
            "path": "opd/train/verl/reward.py", "name": "compute_score"}}})
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
    from opd.train.verl.reward import compute_score
    assert compute_score("world", r"so \boxed{12}", "12") == 1.0
    assert compute_score("world", r"so \boxed{13}", "12", extra_info={}) == 0.0
    assert compute_score("world", "so 12", "12") == 0.0
