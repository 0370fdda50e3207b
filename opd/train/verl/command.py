r"""The verl backend of the ``train`` stage: a ``TrainConfig`` -> ``verl.trainer.main_ppo`` argv.

Pure Python (no verl import). What maps to which Hydra key, which top-k strategies run exactly,
approximately or not at all, and why: ``docs/verl.md``.

    argv = verl_command("opd", train_config(config, "opd"), paths, cluster)   # opd.experiments
    subprocess.run(argv, env={**os.environ, **verl_env()}, check=True)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from opd.objectives.config import STRATEGIES, WEIGHT_MODES
from opd.train.config import TrainConfig

#: The module verl imports in every worker (``actor_rollout_ref.model.external_lib``) and in
#: the driver (``VERL_USE_EXTERNAL_MODULES``, see ``verl_env``).
EXTERNAL_MODULE = "opd.train.verl.ext"
#: Name of the reward function inside ``paths["reward_fn_file"]``.
REWARD_FN_NAME = "compute_score"
#: The alternative named by every refusal.
ALTERNATIVE = "use backends.train: native, or strategy only_tch (or intersection)"

SUPPORTED_TOPK_STRATEGIES = ("only_tch", "intersection")
#: Strategies verl runs only approximately (``teacher_topk`` > ``top_k``), see the module docstring.
APPROX_TOPK_STRATEGIES = ("only_stu", "union", "union-intersection")
#: The ``top_k`` values the approximate losses exist for: verl's loss names are registered once,
#: at import, so k (which the logits processor cannot see) is part of the name.
APPROX_TOPK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


class UnsupportedCombination(ValueError):
    """An objective setting the verl backend cannot run as the native trainer does (exactly, or
    approximately where ``teacher_topk`` allows it)."""


def topk_loss_name(strategy: str, weight_mode: str, approx_k: Optional[int] = None) -> str:
    """The distillation ``loss_mode`` ``verl_ext`` registers: ``opd_<strategy>_<weight_mode>`` for an
    exact top-k combination, ``opd_<strategy>_<weight_mode>_approx_k<approx_k>`` for an approximate one."""
    name = f"opd_{strategy}_{weight_mode}"
    return name if approx_k is None else f"{name}_approx_k{approx_k}"


#: Every exact loss name ``verl_ext`` registers -> (strategy, weight_mode).
TOPK_LOSSES = {topk_loss_name(s, w): (s, w) for s in SUPPORTED_TOPK_STRATEGIES for w in WEIGHT_MODES}
#: Every approximate loss name ``verl_ext`` registers -> (strategy, weight_mode, k).
APPROX_TOPK_LOSSES = {topk_loss_name(s, w, k): (s, w, k)
                      for s in APPROX_TOPK_STRATEGIES for w in WEIGHT_MODES for k in APPROX_TOPK_SIZES}

_REFUSAL_WHY = {
    "only_stu": "its candidates are the student's top-k ids, and verl's vLLM teacher returns "
                "log-probs only at the teacher's own top-k ids (or the sampled token), never at "
                "the student's",
    "union": "its student half needs the teacher's log-probs at the student's top-k ids, which "
             "verl's vLLM teacher never returns",
    "union-intersection": "its student half needs the teacher's log-probs at the student's "
                          "top-k ids, which verl's vLLM teacher never returns",
}


def _approx_ok(teacher_topk: Optional[int], top_k: Optional[int]) -> bool:
    return teacher_topk is not None and (top_k is None or (top_k in APPROX_TOPK_SIZES and teacher_topk > top_k))


def support_table(teacher_topk: Optional[int] = None,
                  top_k: Optional[int] = None) -> dict[tuple[Any, Any], str]:
    """``{(strategy, weight_mode): "exact" | "approximate" | "refused"}`` for all 15 top-k
    combinations, plus ``(0, None)`` for sampled-token OPD (``top_k: 0``, where strategy and
    weights do not apply; always "exact").

    "exact" means the verl run optimises the same per-token objective as the native trainer
    (given the global conditions in the module docstring); "approximate" that it runs the
    bounded approximation of the module docstring; "refused" raises ``UnsupportedCombination``.
    Without ``teacher_topk`` (the default) nothing is approximate.  With it, ``only_stu`` /
    ``union`` / ``union-intersection`` are "approximate" -- for every ``top_k`` in
    ``APPROX_TOPK_SIZES`` below ``teacher_topk`` when ``top_k`` is None, else for that ``top_k`` only.
    """
    approx = _approx_ok(teacher_topk, top_k)
    table: dict[tuple[Any, Any], str] = {
        (s, w): ("exact" if s in SUPPORTED_TOPK_STRATEGIES else "approximate" if approx else "refused")
        for s in STRATEGIES for w in WEIGHT_MODES}
    table[(0, None)] = "exact"
    return table


def _refuse(msg: str) -> UnsupportedCombination:
    return UnsupportedCombination(f"verl backend: {msg}; {ALTERNATIVE}")


def teacher_topk_option(cluster: Optional[dict]) -> Optional[int]:
    """``cluster["teacher_topk"]`` (``backends.verl.teacher_topk``) validated: None or an int >= 1."""
    k = (cluster or {}).get("teacher_topk")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"backends.verl.teacher_topk must be null or an int >= 1, got {k!r}")
    return k


def _approx_hint(top_k: int, teacher_topk: Optional[int]) -> str:
    sizes = ", ".join(map(str, APPROX_TOPK_SIZES))
    if teacher_topk is None or teacher_topk <= top_k:
        now = "it is not set" if teacher_topk is None else f"it is {teacher_topk}"
        why = f"backends.verl.teacher_topk must be above top_k={top_k} ({now})"
    else:
        why = f"top_k={top_k} is not one of the sizes the approximate losses exist for ({sizes})"
    return (f"verl can run it approximately (the teacher's log-probs looked up in its top-K' and bounded "
            f"outside it) when backends.verl.teacher_topk = K' > top_k, e.g. 4*top_k = {4 * top_k}, "
            f"and top_k is one of {sizes}; here {why}")


def _topk_plan(o, teacher_topk: Optional[int]) -> tuple[str, bool, Optional[int]]:
    """(loss_mode, use_policy_gradient, distillation_loss.topk) of an OPD objective ``o``; raises
    ``UnsupportedCombination`` for a top-k strategy verl cannot run (exactly or approximately)."""
    if o.top_k == 0:
        return "k1", True, None
    if teacher_topk is not None and teacher_topk < o.top_k:
        raise _refuse(f"backends.verl.teacher_topk={teacher_topk} is below top_k={o.top_k}: the teacher "
                      "must return at least top_k log-probs (null means top_k)")
    if o.strategy in SUPPORTED_TOPK_STRATEGIES:
        return topk_loss_name(o.strategy, o.weight_mode), False, o.top_k
    if not _approx_ok(teacher_topk, o.top_k):
        raise _refuse(f"strategy {o.strategy!r} (weight_mode {o.weight_mode!r}) is not expressible exactly: "
                      f"{_REFUSAL_WHY[o.strategy]}. {_approx_hint(o.top_k, teacher_topk)}")
    return topk_loss_name(o.strategy, o.weight_mode, o.top_k), False, teacher_topk


def _check_objective(train, teacher_topk: Optional[int] = None) -> None:
    """Raise ``UnsupportedCombination`` when ``train`` (a ``TrainConfig``) cannot run on verl, exactly
    or (``teacher_topk`` > ``top_k``, see the module docstring) approximately."""
    o = train.objective
    if train.teacher_prompt == "own":
        raise _refuse("teacher_prompt: own (the teacher scoring its own chat template's prompt) has no "
                      "verl mapping here: verl's teacher scores the student's token ids")
    if o.tail_bucket:
        raise _refuse("tail_bucket is not wired to verl's distillation losses (it needs the teacher's "
                      "mass on the whole candidate set, which verl's teacher does not return for the "
                      "student's ids)")
    if o.policy_loss != "vanilla":
        raise _refuse(f"policy_loss {o.policy_loss!r} has no verl counterpart wired here (only vanilla)")
    if o.adv_estimator == "grpo":
        return
    _topk_plan(o, teacher_topk)
    if o.teacher_temperature != 1.0:
        raise _refuse(f"teacher_temperature={o.teacher_temperature} is not expressible: verl's teacher "
                      "always scores at temperature 1.0")
    batch = train.prompts_per_step * train.n_samples
    if train.ppo_epochs != 1 or train.mini_batch_size not in (None, batch):
        raise _refuse("OPD on verl needs one optimiser step per rollout batch (ppo_epochs 1 and "
                      f"mini_batch_size null or {batch}): verl keeps no old log-probs at the OPD "
                      "candidates, so later mini-batches would use a different PPO ratio than native")
    if o.adv_estimator == "token_reward_direct" and o.use_kl_loss:
        raise _refuse("use_kl_loss with adv_estimator token_reward_direct: verl drops the actor's KL "
                      "loss when distillation runs without task rewards")
    if o.adv_estimator == "token_reward_direct_plus_grpo" and o.grpo_outcome_weight != 1.0:
        raise _refuse(f"grpo_outcome_weight={o.grpo_outcome_weight}: verl adds the task (GRPO) loss to "
                      "the distillation loss with weight 1 only")
    if o.adv_estimator not in ("token_reward_direct", "token_reward_direct_plus_grpo"):
        raise _refuse(f"adv_estimator {o.adv_estimator!r} has no verl OPD mapping")


def check_supported(train: TrainConfig, cluster: Optional[dict] = None) -> None:
    """Raise ``UnsupportedCombination`` if verl cannot run ``train`` (the message names the
    alternative).  ``cluster`` is ``backends.verl``; only its ``teacher_topk`` matters here
    (without it, only the exact combinations pass)."""
    _check_objective(train, teacher_topk_option(cluster))


def check_config(config: dict, exp: str) -> None:
    """The registry's DAG-time check of experiment ``exp`` of the workflow ``config``."""
    from opd.experiments import train_config

    check_supported(train_config(config, exp), config.get("backends", {}).get("verl"))


def is_approximate(train: TrainConfig, cluster: Optional[dict] = None) -> bool:
    """Whether verl would run ``train`` with an approximate loss (call ``check_supported`` first)."""
    o = train.objective
    if o.adv_estimator == "grpo" or o.top_k == 0:
        return False
    return _topk_plan(o, teacher_topk_option(cluster))[0] in APPROX_TOPK_LOSSES


def _fmt(v: Any) -> str:
    """A Hydra override value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"non-finite value {v!r}")
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_fmt(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if any(c in s for c in " ,=[]{}()'\"\\$:") or s == "":
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return s


def verl_env() -> dict[str, str]:
    """Environment for the driver process so it registers the paper's estimators too."""
    return {"VERL_USE_EXTERNAL_MODULES": EXTERNAL_MODULE}


def tracker_loggers(logging: Optional[dict]) -> list[str]:
    """``trainer.logger`` for the config's ``logging`` switches: console and the file logger
    (converted to metrics.jsonl), plus ``tensorboard`` and ``wandb`` when switched on."""
    logging = logging or {}
    return (["console", "file"] + (["tensorboard"] if logging.get("tensorboard") else [])
            + (["wandb"] if logging.get("wandb") else []))


def tracker_env(logging: Optional[dict], run_dir) -> dict[str, str]:
    """Environment of verl's trackers: TensorBoard events in ``<run_dir>/tensorboard`` (as the
    native trainer), W&B in ``<run_dir>/wandb`` with the configured mode and entity."""
    logging, env = logging or {}, {}
    if logging.get("tensorboard"):
        env["TENSORBOARD_DIR"] = str(Path(run_dir) / "tensorboard")
    wandb = logging.get("wandb") or {}
    if wandb:
        env.update({"WANDB_MODE": wandb.get("mode", "offline"), "WANDB_DIR": str(run_dir)})
        if wandb.get("entity"):
            env["WANDB_ENTITY"] = wandb["entity"]
    return env


def verl_overrides(exp_name: str, train: TrainConfig, paths: dict,
                   cluster: Optional[dict] = None) -> dict[str, Any]:
    """The ordered ``{hydra key: value}`` overrides behind ``verl_command``."""
    c = dict(cluster or {})
    teacher_topk = teacher_topk_option(c)
    _check_objective(train, teacher_topk)
    o = train.objective
    is_grpo = o.adv_estimator == "grpo"
    need = ["student", "train_parquet", "val_parquet", "output_dir", "reward_fn_file"]
    if not is_grpo:
        need.append("teacher")
    missing = [k for k in need if not paths.get(k)]
    if missing:
        raise ValueError(f"verl_command: paths is missing {missing}")
    if train.mini_batch_size is not None and train.mini_batch_size % train.n_samples:
        raise ValueError(f"mini_batch_size={train.mini_batch_size} must be a multiple of n_samples="
                         f"{train.n_samples}: verl counts mini-batches in prompts")
    mini_prompts = (train.prompts_per_step if train.mini_batch_size is None
                    else train.mini_batch_size // train.n_samples)
    # micro-batches only split the gradient accumulation; keep them within one mini-batch
    micro = min(train.micro_batch_size, mini_prompts * train.n_samples)
    n_gpus, nnodes = c.get("n_gpus_per_node", 1), c.get("nnodes", 1)
    with_task = is_grpo or o.adv_estimator == "token_reward_direct_plus_grpo"
    a = "actor_rollout_ref.actor."
    r = "actor_rollout_ref.rollout."
    ov: dict[str, Any] = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": o.norm_adv_by_std,
        "algorithm.use_kl_in_reward": False,
        "data.train_files": str(paths["train_parquet"]),
        "data.val_files": str(paths["val_parquet"]),
        "data.train_batch_size": train.prompts_per_step,
        "data.max_prompt_length": c.get("max_prompt_length", 512),
        "data.max_response_length": train.max_new_tokens,
        "data.seed": train.seed,
        "actor_rollout_ref.model.path": str(paths["student"]),
        "actor_rollout_ref.model.external_lib": EXTERNAL_MODULE,
        a + "strategy": "fsdp",
        a + "optim.lr": float(train.lr),
        a + "optim.weight_decay": float(train.weight_decay),
        a + "optim.clip_grad": float(train.grad_clip),
        a + "optim.lr_scheduler_type": "constant",
        a + "optim.lr_warmup_steps": train.lr_warmup_steps or -1,   # -1: verl reads the ratio, 0
        a + "optim.lr_warmup_steps_ratio": 0.0,
        a + "optim.override_optimizer_config": {"eps": float(train.adam_eps)},
        a + "ppo_mini_batch_size": mini_prompts,
        a + "ppo_micro_batch_size_per_gpu": micro,
        a + "ppo_epochs": train.ppo_epochs,
        a + "data_loader_seed": train.seed,
        a + "policy_loss.loss_mode": "vanilla",
        a + "clip_ratio_low": o.clip_ratio_low,
        a + "clip_ratio_high": o.clip_ratio_high,
        a + "clip_ratio_c": o.clip_ratio_c,
        a + "loss_agg_mode": o.loss_agg_mode,
        a + "loss_scale_factor": o.loss_scale_factor,
        a + "entropy_coeff": 0.0,
        a + "use_kl_loss": o.use_kl_loss,
        a + "kl_loss_coef": o.kl_loss_coef,
        a + "kl_loss_type": o.kl_loss_type,
        r + "name": c.get("rollout_name", "vllm"),
        r + "n": train.n_samples,
        r + "temperature": o.student_temperature,
        r + "top_p": 1.0,
        r + "tensor_model_parallel_size": c.get("rollout_tp", 1),
        r + "gpu_memory_utilization": c.get("gpu_memory_utilization", 0.5),
        r + "log_prob_micro_batch_size_per_gpu": micro,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": micro,
        "reward.custom_reward_function.path": str(paths["reward_fn_file"]),
        "reward.custom_reward_function.name": REWARD_FN_NAME,
        "trainer.project_name": ((train.logging or {}).get("wandb") or {}).get("project")
        or c.get("project_name", "opd"),
        "trainer.experiment_name": exp_name,
        "trainer.logger": tracker_loggers(train.logging),
        "trainer.total_training_steps": train.steps,
        "trainer.save_freq": train.save_every,
        "trainer.test_freq": c.get("test_freq", -1),
        "trainer.val_before_train": False,
        "trainer.resume_mode": "auto",
        "trainer.default_local_dir": str(paths["output_dir"]),
        a + "checkpoint.save_contents": ["model", "optimizer", "extra", "hf_model"],
        "trainer.n_gpus_per_node": n_gpus,
        "trainer.nnodes": nnodes,
    }
    if is_grpo and c.get("grpo_rollout_is"):
        # the authors' GRPO script: truncated importance sampling between the vLLM rollout's and
        # the trainer's log-probs (verl's rollout correction, per token, weights capped at 2.0)
        ov.update({"algorithm.rollout_correction.rollout_is": c["grpo_rollout_is"],
                   "algorithm.rollout_correction.rollout_is_threshold": c.get("grpo_rollout_is_threshold", 2.0),
                   r + "calculate_log_probs": True})
    if train.enable_thinking is not None:
        # `+`: verl's packaged default is an empty dict, whose keys Hydra only lets one append
        ov["+data.apply_chat_template_kwargs.enable_thinking"] = train.enable_thinking
    if c.get("test_freq", -1) > 0 and c.get("val"):
        v = c["val"]
        ov.update({r + "val_kwargs.n": v["n"], r + "val_kwargs.temperature": v["temperature"],
                   r + "val_kwargs.top_p": v["top_p"], r + "val_kwargs.do_sample": v["temperature"] > 0,
                   "data.val_max_samples": v.get("max_samples", -1)})
    if not is_grpo:
        d = "distillation."
        dl = d + "distillation_loss."
        tm = d + "teacher_models.teacher_model."
        loss_mode, use_pg, topk = _topk_plan(o, teacher_topk)
        ov.update({
            d + "enabled": True,
            d + "n_gpus_per_node": c.get("teacher_n_gpus_per_node", 1),
            d + "nnodes": c.get("teacher_nnodes", 1),
            tm + "model_path": str(paths["teacher"]),
            tm + "inference.tensor_model_parallel_size": c.get("teacher_tp", 1),
            tm + "inference.temperature": 1.0,
            dl + "loss_mode": loss_mode,
            dl + "topk": topk,
            dl + "use_task_rewards": with_task,
            dl + "distillation_loss_coef": 1.0,
            dl + "use_policy_gradient": use_pg,
            dl + "policy_loss_mode": "vanilla",
            dl + "clip_ratio_low": o.clip_ratio_low,
            dl + "clip_ratio_high": o.clip_ratio_high,
            dl + "loss_max_clamp": None,
            dl + "log_prob_min_clamp": None,
        })
    return ov


def verl_command(exp_name: str, train: TrainConfig, paths: dict, cluster: Optional[dict] = None) -> list[str]:
    """``["python", "-m", "verl.trainer.main_ppo", "key=value", ...]`` for one experiment.

    ``train`` is the experiment's parsed ``TrainConfig`` (its fields plus
    ``objective``).  Raises ``UnsupportedCombination`` (a ``ValueError``) for objectives verl
    cannot run (exactly, or approximately with ``cluster["teacher_topk"]``), naming the alternative;
    ``ValueError`` for missing paths.
    """
    ov = verl_overrides(exp_name, train, paths, cluster)
    python = (cluster or {}).get("python", "python")
    return [python, "-m", "verl.trainer.main_ppo"] + [f"{k}={_fmt(v)}" for k, v in ov.items()]
