r"""The outside module verl imports in every worker: the paper's estimators and top-k OPD losses.

verl 0.9.1 imports it (a) in the driver through ``VERL_USE_EXTERNAL_MODULES=opd.backends.verl_ext``
(read by ``verl/__init__.py``) and (b) in every worker that builds the model config through
``actor_rollout_ref.model.external_lib=opd.backends.verl_ext`` (``HFModelConfig.__post_init__``
calls ``import_external_libs``).  ``opd.backends.verl.verl_command`` sets (b); ``verl_env`` gives (a).
Importing it again (or reloading it) is harmless: a name already registered by this module is
skipped, a name registered by someone else raises ``ValueError``.

Registered here:

* Advantage estimators (``verl.trainer.ppo.core_algos.register_adv_est``), with verl's signature
  ``fn(token_level_rewards [B, L], response_mask [B, L], config=AlgoConfig, index=uids [B], **kw)
  -> (advantages [B, L], returns [B, L])``, computed by ``opd.objectives`` with one candidate
  (M = 1) on verl's dense token rewards:

  - ``token_reward_direct``:  A[b, l] = r[b, l] * mask[b, l];
  - ``token_reward_direct_plus_grpo``:  A = direct + w * grpo, the GRPO term on the outcome
    o_b = sum_l r[b, l] mask[b, l] grouped by ``index`` (normalised by the group std when
    ``config.norm_adv_by_std_in_grpo``); w = ``config.pf_ppo["opd_grpo_outcome_weight"]`` if
    present, else 1.

  For users whose reward function puts dense per-token rewards in ``token_level_rewards``.  The
  commands of ``opd.backends.verl`` do not route OPD rewards through them: verl computes the
  teacher term inside the actor's distillation loss, and the GRPO term through verl's own
  ``grpo`` (identical math: unbiased std, eps 1e-6, singleton groups mean 0 / std 1).

* Distillation losses (``verl.trainer.distillation.losses.register_distillation_loss`` with
  ``DistillationLossSettings(names=[...], use_topk=True)``) named ``opd_<strategy>_<weight_mode>``
  for strategy ``only_tch`` and ``intersection`` and every weight mode.  verl calls a loss as
  ``fn(config=ActorConfig, distillation_config=DistillationConfig, model_output=dict,
  data=TensorDict) -> (per-token losses [B, R], metrics)``.  For top-k losses verl computes the
  per-token values in a *logits processor* (``compute_topk_loss``, called with the student's
  temperature-scaled logits ``[1, nnz, V]`` and the teacher's nested ``teacher_ids`` /
  ``teacher_logprobs`` ``[nnz, k]``) that 0.9.1 hard-wires to ``forward_kl_topk``; this module
  wraps that function so that, for the names above only, it returns the paper's per-token
  surrogate instead (every other loss mode goes to verl's original).  Per position:

      candidates, valid, weights w, rewards r_c = -(S[c] - T[c]) w_c      (opd.objectives.topk)
      loss = sum_c vanilla_ppo(logp_new = S[c], logp_old = S[c].detach(), A_c = r_c.detach())

  i.e. the native trainer's per-candidate PPO loss at ratio 1 (one optimiser step per rollout
  batch, which ``verl_command`` enforces); the registered loss returns it per token and verl
  aggregates it with the actor's ``loss_agg_mode`` (``use_policy_gradient=false``,
  ``loss_max_clamp=null``), adding verl's task loss when ``use_task_rewards=true``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from opd.backends.verl import SUPPORTED_TOPK_STRATEGIES, TOPK_LOSSES
from opd.objectives import OPDConfig, TOKEN_LOSSES, candidate_weights, token_reward_direct, \
    token_reward_direct_plus_grpo
from opd.objectives.topk import TopkDetails, floor_teacher, isin_rows

_MARK = "_opd_verl_ext"


# ----------------------------------------------------------------------------- pure math
def teacher_topk_details(student_logp: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor,
                         strategy: str, weight_mode: str) -> TopkDetails:
    """``opd.objectives.topk_details`` when only the teacher's own top-k is known.

    student_logp [..., V] (log_softmax of the temperature-scaled student logits), teacher_ids /
    teacher_logp [..., k] (the teacher's top-k).  Equals ``topk_details(S, T, k, strategy,
    weight_mode)`` for ``strategy`` in ``SUPPORTED_TOPK_STRATEGIES`` (up to tie-breaking in the
    teacher's top-k), because those strategies read T only at the teacher's top-k ids.
    """
    if strategy not in SUPPORTED_TOPK_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} needs teacher log-probs outside the teacher's top-k; "
                         f"supported: {SUPPORTED_TOPK_STRATEGIES}")
    S = student_logp
    t_ids = teacher_ids.long()
    t_logp = teacher_logp.to(S.dtype)
    t_mem = torch.isfinite(t_logp)
    if strategy == "only_tch":
        ids, valid, t_c = t_ids, t_mem, t_logp
    else:  # intersection: the student's top-k ids that are (finite) members of the teacher's top-k
        s_val, ids = S.topk(t_ids.shape[-1], dim=-1)
        match = (ids.unsqueeze(-1) == t_ids.unsqueeze(-2)) & t_mem.unsqueeze(-2)   # [..., k, k]
        valid = torch.isfinite(s_val) & isin_rows(ids, t_ids, t_mem)
        t_c = torch.where(match, t_logp.unsqueeze(-2), torch.zeros_like(t_logp).unsqueeze(-2)).sum(-1)
    s_c = S.gather(-1, ids)
    valid = valid & torch.isfinite(s_c)
    zero = torch.zeros_like(s_c)
    s_c = torch.where(valid, s_c, zero)
    t_c = torch.where(valid, floor_teacher(t_c), zero)
    w = candidate_weights(s_c, t_c, valid, weight_mode, renormalise=True)
    rewards = torch.where(valid, -(s_c - t_c) * w, zero)
    return TopkDetails(ids, rewards, valid, w, s_c, t_c)


def topk_token_outputs(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor,
                       strategy: str, weight_mode: str, clip_ratio_low: float = 0.2,
                       clip_ratio_high: float = 0.2) -> dict[str, torch.Tensor]:
    """Per-token outputs for the paper's top-k objective: ``distillation_losses`` (with gradient to
    ``student_logits``), ``opd_reward`` (sum of candidate rewards), ``opd_valid`` (valid candidates),
    ``student_mass`` / ``teacher_mass`` (probability mass on the valid candidates); each ``[...]``.

    student_logits [..., V] are already divided by the student temperature (verl does that).
    """
    S = F.log_softmax(student_logits.float(), dim=-1)
    d = teacher_topk_details(S, teacher_ids, teacher_logp, strategy, weight_mode)
    # d.student_logp carries the gradient; the advantage and logp_old are detached
    cfg = OPDConfig(top_k=max(int(teacher_ids.shape[-1]), 1), strategy=strategy, weight_mode=weight_mode,
                    clip_ratio_low=clip_ratio_low, clip_ratio_high=clip_ratio_high)
    loss, _ = TOKEN_LOSSES.get("vanilla")(d.student_logp, d.student_logp.detach(), d.rewards.detach(),
                                          d.valid, cfg)
    vf = d.valid.to(S.dtype)
    return {
        "distillation_losses": loss,
        "opd_reward": d.rewards.detach().sum(-1),
        "opd_valid": vf.sum(-1),
        "student_mass": (d.student_logp.detach().exp() * vf).sum(-1),
        "teacher_mass": (d.teacher_logp.exp() * vf).sum(-1),
    }


# ----------------------------------------------------------------------------- advantage estimators
def _cfg_get(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    getter = getattr(config, "get", None)
    if getter is not None:
        try:
            return getter(key, default)
        except Exception:  # noqa: BLE001 - dataclass configs without the key
            pass
    return getattr(config, key, default)


def _group_ids(index: Any, n: int, device: torch.device) -> torch.Tensor:
    if index is None:
        raise ValueError("token_reward_direct_plus_grpo needs `index` (the rollout group uids)")
    codes: dict[Any, int] = {}
    ids = [codes.setdefault(u if not isinstance(u, torch.Tensor) else u.item(), len(codes)) for u in list(index)]
    if len(ids) != n:
        raise ValueError(f"index has {len(ids)} entries for {n} rollouts")
    return torch.tensor(ids, dtype=torch.long, device=device)


def adv_token_reward_direct(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                            config: Any = None, index: Any = None, **kwargs: Any):
    """verl estimator: A = r * mask (the paper's token_reward_direct, M = 1); returns (A, A)."""
    r = token_level_rewards.unsqueeze(-1)
    a = token_reward_direct(r, torch.ones_like(r, dtype=torch.bool), response_mask, None, None, OPDConfig())
    a = a.squeeze(-1)
    return a, a


def adv_token_reward_direct_plus_grpo(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                      config: Any = None, index: Any = None, **kwargs: Any):
    """verl estimator: A = r * mask + w * grpo(sum_l r * mask, groups = index); returns (A, A)."""
    pf = _cfg_get(config, "pf_ppo", None) or {}
    w = float(pf.get("opd_grpo_outcome_weight", 1.0)) if hasattr(pf, "get") else 1.0
    cfg = OPDConfig(norm_adv_by_std=bool(_cfg_get(config, "norm_adv_by_std_in_grpo", True)),
                    grpo_outcome_weight=w)
    mask = response_mask.to(token_level_rewards.dtype)
    outcome = (token_level_rewards * mask).sum(-1)
    groups = _group_ids(index, token_level_rewards.shape[0], token_level_rewards.device)
    r = token_level_rewards.unsqueeze(-1)
    a = token_reward_direct_plus_grpo(r, torch.ones_like(r, dtype=torch.bool), response_mask, outcome,
                                      groups, cfg).squeeze(-1)
    return a, a


# ----------------------------------------------------------------------------- distillation loss
def opd_topk_distillation_loss(config: Any, distillation_config: Any, model_output: dict, data: Any):
    """verl distillation loss ``opd_<strategy>_<weight_mode>``: the per-token surrogate computed by the
    (wrapped) logits processor, as ``[B, R]``, plus mean reward / valid-candidate metrics."""
    from verl.workers.utils.padding import no_padding_2_padding

    losses = no_padding_2_padding(model_output["distillation_losses"], data)
    mask = data["response_mask"]
    mask = (mask.to_padded_tensor(False) if mask.is_nested else mask).bool()
    metrics = {}
    for key in ("opd_reward", "opd_valid", "student_mass", "teacher_mass"):
        if key in model_output:
            v = no_padding_2_padding(model_output[key], data)
            metrics[f"distillation/{key}"] = float(v[mask].float().mean().item()) if mask.any() else 0.0
    return losses, metrics


def _topk_logits_processor(orig):
    def compute_topk_loss(config, distillation_config, data, student_logits, data_format="thd"):
        loss_cfg = distillation_config.distillation_loss
        if loss_cfg.loss_mode not in TOPK_LOSSES:
            return orig(config, distillation_config, data, student_logits, data_format)
        if config.strategy not in ("fsdp", "fsdp2"):
            raise ValueError(f"{loss_cfg.loss_mode}: the opd top-k losses run on the fsdp/fsdp2 "
                             f"actor only, got strategy {config.strategy!r}; set "
                             "actor_rollout_ref.actor.strategy=fsdp2 or use strategy only_tch "
                             "with verl's own forward_kl_topk")
        strategy, weight_mode = TOPK_LOSSES[loss_cfg.loss_mode]
        t_logp, t_ids = data["teacher_logprobs"], data["teacher_ids"]
        if t_logp.is_nested:
            t_logp, t_ids = t_logp.values().unsqueeze(0), t_ids.values().unsqueeze(0)
        from verl.utils.ulysses import get_ulysses_sequence_parallel_world_size, slice_input_tensor
        if get_ulysses_sequence_parallel_world_size() > 1:
            t_logp, t_ids = slice_input_tensor(t_logp, dim=1), slice_input_tensor(t_ids, dim=1)
        assert t_logp.shape[:2] == t_ids.shape[:2] == student_logits.shape[:2]
        return topk_token_outputs(student_logits, t_ids, t_logp, strategy, weight_mode,
                                  loss_cfg.clip_ratio_low, loss_cfg.clip_ratio_high)

    setattr(compute_topk_loss, _MARK, True)
    compute_topk_loss.__wrapped__ = orig
    return compute_topk_loss


# ----------------------------------------------------------------------------- registration
def _ours(fn: Any) -> bool:
    return getattr(fn, _MARK, False) or getattr(fn, "__module__", None) == __name__


def register() -> None:
    """Register everything with verl (idempotent)."""
    from verl.trainer.distillation import losses as L
    from verl.trainer.ppo import core_algos

    for name, fn in (("token_reward_direct", adv_token_reward_direct),
                     ("token_reward_direct_plus_grpo", adv_token_reward_direct_plus_grpo)):
        have = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if have is None:
            core_algos.register_adv_est(name)(fn)
        elif not _ours(have):
            raise ValueError(f"verl advantage estimator {name!r} is already registered by {have!r}")

    names = [n for n in TOPK_LOSSES if n not in L.DISTILLATION_LOSS_REGISTRY]
    for n in TOPK_LOSSES:
        have = L.DISTILLATION_LOSS_REGISTRY.get(n)
        if have is not None and not _ours(have):
            raise ValueError(f"verl distillation loss {n!r} is already registered by {have!r}")
    if names:
        L.register_distillation_loss(L.DistillationLossSettings(names=names, use_topk=True))(
            opd_topk_distillation_loss)

    if not getattr(L.compute_topk_loss, _MARK, False):
        L.compute_topk_loss = _topk_logits_processor(L.compute_topk_loss)


register()
